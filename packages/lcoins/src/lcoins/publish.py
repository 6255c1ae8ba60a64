"""Publish a trained L-CoIns as a ``save_pretrained`` folder with its model card.

The folder holds ``config.json`` (the module's constructor arguments), ``model.safetensors``
(the trained tensors only: a frozen pretrained text encoder is named in the config and loaded
from its package, :meth:`lcoins.module.LCoInsModule.external_parts`) and ``README.md``: what the
model is, the recipe that trained it, the sha256 of both files, the scoring command and, when
given, its scores.

::

    python -m lcoins.publish outputs/lcoins-capshapes-v1/checkpoints/last.ckpt \\
        benchmarks/weights/capshapes-lcoins-v1 \\
        --recipe packages/lcoins/configs/capshapes.yaml \\
        packages/lcoins/configs/recipes/capshapes-lcoins-v1.yaml [--scores scores.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lcoins.module import LCoInsModule

__all__ = ["main", "model_card", "publish", "sha256"]

#: The command that scores a published folder on held-out CapShapes test scenes.
SCORING = "python -m lcoins.evaluate {folder} --split test --scenes 2048"


def sha256(path: str | Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_card(
    module: LCoInsModule,
    folder: Path,
    steps: int,
    data: Mapping[str, Any],
    recipe: Sequence[str],
    scores: Mapping[str, Any] | None = None,
) -> str:
    """The README of a published folder (after its files are written)."""
    net = module.network_config
    trained = sum(p.numel() for n, p in module.named_parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    frozen = [f"`{net.text_encoder}` (frozen, loaded from its package, not in this folder)"]
    fit = "lcoins fit " + " ".join(f"--config {c}" for c in recipe)
    lines = [
        "---",
        "library_name: chromalab",
        "tags: [colorization, chromalab, lcoins]",
        "---",
        "",
        f"# {folder.name}",
        "",
        'An L-CoIns colorization network (Chang, Weng, Zhang, Li, Li and Shi, "L-CoIns: '
        'Language-based Colorization with Instance Awareness", CVPR 2023) trained on CapShapes '
        f"scenes of {data.get('capshapes_size', net.image_size)} pixels: a {net.depth}-block "
        f"grouping transformer of width {net.width} with {net.groups} group tokens over a ViT "
        f"({net.image_encoder}, {dict(net.image_options)}) and the text encoder "
        f"{frozen[0]}. {trained:,} trained parameters of {total:,}.",
        "",
        "## Recipe",
        "",
        f"{steps:,} optimizer steps of batch {data.get('batch_size', '?')}, AdamW "
        f"{module.hparams.lr:g} with {module.hparams.warmup_steps} warm-up steps and "
        f"{module.hparams.lr_schedule} decay, Eq. 16 with alpha {module.hparams.alpha:g}, beta "
        f"{module.hparams.beta:g}, delta {module.hparams.delta:g}. CapShapes training options: "
        f"`{json.dumps(data.get('capshapes_train_options'))}`.",
        "",
        f"    {fit}",
        "",
        "## Files",
        "",
        "| file | sha256 |",
        "|---|---|",
    ]
    for name in ("config.json", "model.safetensors"):
        lines.append(f"| {name} | `{sha256(folder / name)}` |")
    lines += [
        "",
        "## Use",
        "",
        f"    {SCORING.format(folder=folder)}",
        f'    chromalab colorize --model lcoins --weights {folder} --caption "..." photo.png',
        f"    lcoins explain --ckpt {folder} --capshapes 4 -o groups/",
        "",
        "`LCoInsModule.from_pretrained(folder)` loads it (the text encoder from its package).",
    ]
    if scores:
        lines += ["", "## Scores", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in scores.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def publish(
    ckpt: str | Path,
    folder: str | Path,
    recipe: Sequence[str],
    scores: Mapping[str, Any] | None = None,
) -> Path:
    """Write the weights of the ``lcoins fit`` checkpoint ``ckpt`` to ``folder``
    (``save_pretrained``) with its model card."""
    # our own checkpoint: Lightning's loop state needs the full unpickler
    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    module = LCoInsModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    folder = Path(folder)
    module.save_pretrained(folder)
    data = blob.get("datamodule_hyper_parameters") or {}
    card = model_card(module, folder, int(blob["global_step"]), data, recipe, scores)
    (folder / "README.md").write_text(card)
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lcoins.publish", description=__doc__)
    parser.add_argument("ckpt", help="an lcoins fit checkpoint")
    parser.add_argument("folder", help="the folder to write")
    parser.add_argument("--recipe", nargs="+", required=True, help="the fit configs, in order")
    parser.add_argument("--scores", default=None, help="a JSON file of scores for the card")
    args = parser.parse_args(argv)
    scores = json.loads(Path(args.scores).read_text()) if args.scores else None
    print(publish(args.ckpt, args.folder, args.recipe, scores))


if __name__ == "__main__":
    main()
