"""The ``cic`` command: LightningCLI over :class:`CICModule` and :class:`CICDataModule`.

::

    cic fit --config packages/cic/configs/capshapes.yaml
    cic fit --config packages/cic/configs/capshapes.yaml --ckpt_path last      # resume
    cic validate --config ... --ckpt_path path/to.ckpt
    cic predict --config ... --ckpt_path path/to.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from chromalab.training import run_lightning_cli
from cic.datamodule import CICDataModule
from cic.module import CICModule

__all__ = ["CONFIGS", "main", "run"]

#: The package's config files (a source checkout: ``pip install -e packages/cic``).
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def run(args: Sequence[str] | None = None) -> LightningCLI:
    """Run the CLI with ``args`` (default: ``sys.argv[1:]``) and return it."""
    return run_lightning_cli(CICModule, CICDataModule, args)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``cic`` console script."""
    run(args)


if __name__ == "__main__":
    main()
