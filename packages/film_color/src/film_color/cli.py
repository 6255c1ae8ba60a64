"""The ``film-color`` command: LightningCLI over :class:`FilmColorModule` and
:class:`FilmColorDataModule`, plus ``explain`` (activation maps of Fig. 4).

::

    film-color fit --config packages/film_color/configs/capshapes.yaml
    film-color fit --config packages/film_color/configs/capshapes.yaml --ckpt_path last   # resume
    film-color validate --config ... --ckpt_path path/to.ckpt
    film-color test / predict --config ... --ckpt_path path/to.ckpt
    film-color explain --ckpt path/to.ckpt --caption "a red car" photo.jpg -o maps/
    film-color explain --ckpt path/to.ckpt --capshapes 4 -o maps/      # scenes + own captions
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI

from chromalab.training import run_lightning_cli
from film_color.datamodule import FilmColorDataModule
from film_color.module import FilmColorModule

__all__ = ["explain_main", "main", "run"]


def run(args: Sequence[str] | None = None) -> LightningCLI:
    """Run the LightningCLI with ``args`` (default: ``sys.argv[1:]``) and return it."""
    return run_lightning_cli(FilmColorModule, FilmColorDataModule, args)


def _explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="film-color explain",
        description="Mean activation maps after the FiLM layers of blocks 6-8 (Fig. 4) as PNG "
        "heatmaps over the image, plus the colorization.",
    )
    parser.add_argument("inputs", nargs="*", help="image files or folders")
    parser.add_argument("--ckpt", required=True, help="a film-color fit checkpoint")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--caption", default=None, help="caption used for every input image")
    parser.add_argument(
        "--capshapes",
        type=int,
        default=0,
        metavar="N",
        help="also explain the first N CapShapes validation scenes with their own captions",
    )
    parser.add_argument("--size", type=int, default=None, help="network input side")
    parser.add_argument(
        "--blocks", type=int, nargs="+", default=[6, 7, 8], help="blocks to show (1..8)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return parser


def explain_main(argv: Sequence[str]) -> int:
    """``film-color explain ...``; returns the exit code."""
    from chromalab.data import CapShapes
    from chromalab.io import ImageLoadError, iter_image_files, load_image
    from chromalab.models import resolve_device
    from film_color.explain import explain_images
    from film_color.weights import load_trained

    args = _explain_parser().parse_args(list(argv))
    try:
        module = load_trained(args.ckpt, str(resolve_device(args.device)))
        size = args.size or module.input_size or 224
        images, captions = [], []
        for item in args.inputs:
            for path in iter_image_files(item):
                images.append((path.stem, load_image(path)))
                captions.append(args.caption)
        if images and module.uses_captions and args.caption is None:
            conditioning = module.network_config.conditioning
            raise ValueError(f"{conditioning} colorizes from a caption: --caption")
        if args.capshapes > 0:
            scenes = CapShapes(length=args.capshapes, size=size, seed=1)  # validation scenes
            for i in range(args.capshapes):
                scene = scenes[i]
                images.append((f"capshapes{i:04d}", scene["rgb"]))
                captions.append(scene["caption"])
        if not images:
            raise ValueError("nothing to explain: give image files/folders or --capshapes N")
        written = explain_images(
            module,
            images,
            captions if module.uses_captions else None,
            args.output,
            size,
            args.blocks,
        )
    except (FileNotFoundError, ValueError, ImageLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} image(s) into {args.output}")
    return 0


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``film-color`` console script."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "explain":
        code = explain_main(argv[1:])
        if code:
            raise SystemExit(code)
        return
    run(args)


if __name__ == "__main__":
    main()
