"""The ``lcad`` command: LightningCLI over one training stage's module and
:class:`LCADDataModule`, the stage chosen with ``--stage``.

::

    lcad fit --stage autoencoder --config packages/lcad/configs/capshapes-autoencoder.yaml
    lcad fit --stage compression --config packages/lcad/configs/capshapes-compression.yaml
    lcad fit --stage diffusion --config packages/lcad/configs/capshapes-diffusion.yaml
    lcad fit --stage diffusion --config ... --ckpt_path last                # resume
    lcad validate / test / predict --stage diffusion --config ... --ckpt_path path/to.ckpt

Stages: ``autoencoder`` (stage 0, a VAE from scratch for the CPU configurations),
``compression`` (stage 1, §3.2) and ``diffusion`` (stage 2, §3.3; the default).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from chromalab.training import run_lightning_cli
from lcad.datamodule import LCADDataModule
from lcad.stages import LCADAutoencoderModule, LCADCompressionModule, LCADDiffusionModule

__all__ = ["CONFIGS", "STAGES", "main", "run", "split_stage"]

#: The package's config files (a source checkout: ``pip install -e packages/lcad``).
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: ``--stage`` values and their modules.
STAGES = {
    "autoencoder": LCADAutoencoderModule,
    "compression": LCADCompressionModule,
    "diffusion": LCADDiffusionModule,
}


def split_stage(args: Sequence[str]) -> tuple[str, list[str]]:
    """``--stage NAME`` (or ``--stage=NAME``) taken out of ``args``: the stage (default
    ``diffusion``) and the remaining arguments."""
    rest: list[str] = []
    stage = "diffusion"
    items = iter(args)
    for arg in items:
        if arg == "--stage":
            stage = next(items, "")
        elif arg.startswith("--stage="):
            stage = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if stage not in STAGES:
        raise SystemExit(f"lcad: --stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return stage, rest


def run(args: Sequence[str] | None = None) -> LightningCLI:
    """Run the CLI with ``args`` (default: ``sys.argv[1:]``) and return it."""
    stage, rest = split_stage(sys.argv[1:] if args is None else args)
    return run_lightning_cli(STAGES[stage], LCADDataModule, rest)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lcad`` console script."""
    run(args)


if __name__ == "__main__":
    main()
