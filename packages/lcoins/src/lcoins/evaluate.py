"""Evaluation of an L-CoIns checkpoint: Table 1's PSNR / SSIM (and LPIPS with its weights), and
on CapShapes scenes the caption consistency and caption-manipulation accuracy.

* :func:`evaluate` scores a checkpoint on CapShapes validation or test scenes, optionally of a
  chosen kind (``options``: e.g. two or more objects that share a noun and differ by a position
  word, ``{"min_objects": 2, "shared_noun_prob": 1.0}``), through the module's own metrics
  (Lightning's ``validate``/``test`` loop);
* :func:`evaluate_captions` scores it on a captioned dataset of the user's (any caption file
  the core reads: the release's ``[[file, caption], ...]``, COCO, JSON lines);
* :func:`unseen_pair_consistency`: for a model trained without some colour-shape pairs
  (CapShapes ``held_out_pairs``), the caption consistency of the objects that show those pairs
  beside that of the other named objects of the same scenes (Fig. 1, "unobserved
  correspondences").

::

    python -m lcoins.evaluate CKPT [--split test] [--scenes 512] [--options '{"min_objects": 2}']
    python -m lcoins.evaluate benchmarks/weights/capshapes-lcoins-v1 --split test --scenes 2048
    python -m lcoins.evaluate CKPT --captions val.json --image-root images/
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from chromalab.color import rgb_to_l_ab
from chromalab.data import CapShapes
from chromalab.hub import is_hub_folder
from chromalab.metrics import CaptionConsistency
from chromalab.runs import score
from lcoins.datamodule import LCoInsDataModule
from lcoins.module import LCoInsModule

__all__ = ["evaluate", "evaluate_captions", "main", "unseen_pair_consistency"]

Split = Literal["val", "test"]


def _load(ckpt: str | Path, lpips_weights: str | None) -> LCoInsModule:
    """An ``lcoins fit`` checkpoint or a ``save_pretrained`` folder (the published weights)."""
    extra = {"lpips_weights": lpips_weights} if lpips_weights else {}
    return LCoInsModule.load_trained(ckpt, "cpu", **extra)


def evaluate(
    ckpt: str | Path,
    scenes: int = 512,
    split: Split = "val",
    options: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    lpips_weights: str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """The metrics of an ``lcoins fit`` checkpoint on ``scenes`` CapShapes scenes of ``split``,
    drawn at the size the model was trained on, with CapShapes ``options``. Returns
    ``{"psnr", "ssim", "caption_consistency", "manipulation_accuracy", "loss", ...}``
    (``lpips`` too with ``lpips_weights``)."""
    module = _load(ckpt, lpips_weights)
    size = int(module.network_config.image_size)
    data = LCoInsDataModule(
        source="capshapes",
        capshapes_size=size,
        image_size=size,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        capshapes_val_length=scenes,
        capshapes_options=dict(options or {}),
    )
    return score(module, data, split, progress)


def evaluate_captions(
    ckpt: str | Path,
    captions: str | Path,
    image_root: str | Path | None = None,
    batch_size: int = 32,
    lpips_weights: str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """The metrics of a checkpoint on a captioned dataset (each image with its first caption),
    at the size the model was trained on."""
    module = _load(ckpt, lpips_weights)
    size = int(module.network_config.image_size)
    data = LCoInsDataModule(
        source="captions",
        val_path=str(captions),
        image_root=None if image_root is None else str(image_root),
        image_size=size,
        batch_size=batch_size,
    )
    return score(module, data, "val", progress)


@torch.no_grad()
def unseen_pair_consistency(
    ckpt: str | Path,
    held_out_pairs: Mapping[str, Sequence[str]],
    scenes: int = 512,
    batch_size: int = 64,
    seed: int = 2,
) -> dict[str, float]:
    """Caption consistency on CapShapes scenes in which every object of a held-out shape shows
    one of its held-out colours: ``held_out_consistency`` over the named objects showing a
    held-out pair, ``seen_consistency`` over the other named objects, and their counts."""
    module = _load(ckpt, None).eval()
    size = int(module.network_config.image_size)
    data = CapShapes(
        length=scenes, size=size, seed=seed, held_out_pairs=dict(held_out_pairs), held_out="only"
    )
    held, seen = CaptionConsistency(), CaptionConsistency()
    for batch in DataLoader(data, batch_size=batch_size):
        l, _ = rgb_to_l_ab(batch["rgb"].to(module.device))
        pred = module.colorize(l, list(batch["caption"])).cpu()
        named, unseen = batch["mentioned"], batch["held_out"]
        args = (batch["masks"], batch["color_ids"])
        held.update(pred, *args, named & unseen, batch["level"])
        seen.update(pred, *args, named & ~unseen, batch["level"])
    return {
        "held_out_consistency": float(held.compute()["accuracy"]),
        "held_out_objects": int(held.total[0]),
        "seen_consistency": float(seen.compute()["accuracy"]),
        "seen_objects": int(seen.total[0]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lcoins.evaluate", description=__doc__)
    parser.add_argument("ckpt", help="an lcoins fit checkpoint or a save_pretrained folder")
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--scenes", type=int, default=512)
    parser.add_argument("--options", type=json.loads, default=None, help="CapShapes options")
    parser.add_argument("--captions", default=None, help="a caption file instead of CapShapes")
    parser.add_argument("--image-root", default=None)
    parser.add_argument("--lpips-weights", default=None, help="local AlexNet weights for LPIPS")
    args = parser.parse_args(argv)
    if not (Path(args.ckpt).is_file() or is_hub_folder(args.ckpt)):
        parser.error(f"no lcoins checkpoint or weights folder at {args.ckpt}")
    if args.captions:
        scores = evaluate_captions(
            args.ckpt, args.captions, args.image_root, lpips_weights=args.lpips_weights,
            progress=True,
        )  # fmt: skip
    else:
        scores = evaluate(
            args.ckpt, args.scenes, args.split, args.options, lpips_weights=args.lpips_weights,
            progress=True,
        )  # fmt: skip
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
