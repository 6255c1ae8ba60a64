"""The ``lcoins`` command: LightningCLI over :class:`LCoInsModule` and :class:`LCoInsDataModule`,
plus ``explain`` (the hard group assignment over the image).

::

    lcoins fit --config packages/lcoins/configs/capshapes.yaml
    lcoins fit --config packages/lcoins/configs/capshapes.yaml --ckpt_path last      # resume
    lcoins validate --config ... --ckpt_path path/to.ckpt
    lcoins test / predict --config ... --ckpt_path path/to.ckpt
    lcoins explain --ckpt path/to.ckpt --caption "a red car" photo.jpg -o groups/
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from chromalab.training import run_lightning_cli
from lcoins.datamodule import LCoInsDataModule
from lcoins.module import LCoInsModule

__all__ = ["CONFIGS", "main", "run"]

#: The package's config files (a source checkout: ``pip install -e packages/lcoins``).
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def run(args: Sequence[str] | None = None) -> LightningCLI:
    """Run the CLI with ``args`` (default: ``sys.argv[1:]``) and return it."""
    return run_lightning_cli(LCoInsModule, LCoInsDataModule, args)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lcoins`` console script."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "explain":
        from lcoins.explain import explain_main

        code = explain_main(argv[1:])
        if code:
            raise SystemExit(code)
        return
    run(args)


if __name__ == "__main__":
    main()
