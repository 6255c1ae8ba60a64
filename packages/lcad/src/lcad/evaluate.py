"""Evaluation of L-CAD checkpoints on CapShapes scenes, through each module's own metrics.

* stage 2 (:class:`lcad.stages.LCADDiffusionModule`): PSNR / SSIM (LPIPS with its weights) of
  the colorizations, and ``CaptionConsistency`` for complete, partial and scarce descriptions,
  for unmentioned objects of canonical colour (what a colour prior can get), and the
  caption-manipulation accuracy;
* stages 0 and 1: PSNR / SSIM of the reconstructions (the VAE's, and the luminance-guided one).

Module hyper-parameters can be overridden at load, a dotted name for one field of a nested
configuration, e.g. ``{"sampling.lic": False}`` (the W/o LIC ablation: the VAE's own decoder),
``{"sampling.steps": 50}``.

::

    python -m lcad.evaluate CKPT [--stage diffusion] [--split test] [--scenes 512]
        [--set sampling.lic=false] [--set sampling.steps=50]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from chromalab.runs import score
from lcad.cli import STAGES
from lcad.datamodule import LCADDataModule

__all__ = ["evaluate", "main"]


def evaluate(
    ckpt: str | Path,
    stage: str = "diffusion",
    scenes: int = 512,
    split: Literal["val", "test"] = "test",
    size: int = 64,
    batch_size: int = 32,
    options: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """The metrics of a ``lcad fit --stage STAGE`` checkpoint on ``scenes`` CapShapes scenes of
    ``split`` at ``size`` (CapShapes ``options``), with module hyper-parameter ``overrides``.
    Returns ``{"psnr", "ssim", ...}``, plus for stage 2 ``caption_consistency``,
    ``caption_consistency_{complete,partial,scarce}``,
    ``unmentioned_canonical_accuracy``, ``manipulation_accuracy`` and ``loss``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {list(STAGES)}, got {stage!r}")
    module = STAGES[stage].load_with_overrides(ckpt, overrides)
    data = LCADDataModule(
        source="capshapes",
        capshapes_size=size,
        image_size=size,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        capshapes_val_length=scenes,
        capshapes_options=dict(options or {}),
    )
    return score(module, data, split, progress)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score an L-CAD checkpoint on CapShapes.")
    parser.add_argument("checkpoint")
    parser.add_argument("--stage", default="diffusion", choices=list(STAGES))
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--scenes", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--options", default="{}", help="CapShapes options, JSON")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a module hyper-parameter (YAML value)")  # fmt: skip
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes NAME=VALUE, got {item!r}")
        overrides[name] = yaml.safe_load(value)
    scores = evaluate(args.checkpoint, args.stage, args.scenes, args.split, args.size,
                      options=json.loads(args.options), overrides=overrides,
                      progress=True)  # fmt: skip
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
