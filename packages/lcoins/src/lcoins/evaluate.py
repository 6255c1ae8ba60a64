"""Evaluation of an L-CoIns checkpoint: Table 1's PSNR / SSIM (and LPIPS with its weights), and
on CapShapes scenes the caption consistency and caption-manipulation accuracy.

* :func:`evaluate` scores a checkpoint on CapShapes validation or test scenes, optionally of a
  chosen kind (``options``: e.g. two or more objects that share a noun and differ by a position
  word, ``{"min_objects": 2, "shared_noun_prob": 1.0}``), through the module's own metrics
  (Lightning's ``validate``/``test`` loop);
* :func:`evaluate_captions` scores it on a captioned dataset of the user's (any caption file
  the core reads: the release's ``[[file, caption], ...]``, COCO, JSON lines).

::

    python -m lcoins.evaluate CKPT [--split test] [--scenes 512] [--options '{"min_objects": 2}']
    python -m lcoins.evaluate CKPT --captions val.json --image-root images/
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl

from lcoins.datamodule import LCoInsDataModule
from lcoins.module import LCoInsModule

__all__ = ["evaluate", "evaluate_captions", "main"]

Split = Literal["val", "test"]


def _run(
    module: LCoInsModule, data: LCoInsDataModule, split: Split, progress: bool
) -> dict[str, float]:
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    loop = trainer.validate if split == "val" else trainer.test
    (metrics,) = loop(module, datamodule=data, verbose=False)
    return {k.split("/", 1)[1]: float(v) for k, v in metrics.items()}


def _load(ckpt: str | Path, lpips_weights: str | None) -> LCoInsModule:
    extra = {"lpips_weights": lpips_weights} if lpips_weights else {}
    return LCoInsModule.load_from_checkpoint(ckpt, map_location="cpu", **extra)


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
    size = int(module.hparams.image_size)
    data = LCoInsDataModule(
        source="capshapes",
        capshapes_size=size,
        image_size=size,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        capshapes_val_length=scenes,
        capshapes_options=dict(options or {}),
    )
    return _run(module, data, split, progress)


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
    size = int(module.hparams.image_size)
    data = LCoInsDataModule(
        source="captions",
        val_path=str(captions),
        image_root=None if image_root is None else str(image_root),
        image_size=size,
        batch_size=batch_size,
    )
    return _run(module, data, "val", progress)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lcoins.evaluate", description=__doc__)
    parser.add_argument("ckpt", help="an lcoins fit checkpoint")
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--scenes", type=int, default=512)
    parser.add_argument("--options", type=json.loads, default=None, help="CapShapes options")
    parser.add_argument("--captions", default=None, help="a caption file instead of CapShapes")
    parser.add_argument("--image-root", default=None)
    parser.add_argument("--lpips-weights", default=None, help="local AlexNet weights for LPIPS")
    args = parser.parse_args(argv)
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
