"""The umbrella ``chromalab`` command.

::

    chromalab info                                   versions, device, installed models
    chromalab prior --data DIR -o prior.pt           ab prior of a dataset (CIC §3.2)
    chromalab data capshapes --out DIR --n 1000      export CapShapes (folder | jsonl | wds)
    chromalab colorize --model cic --ckpt X IMAGE|DIR -o OUT
    chromalab colorize --model M --help              the options model M brings
    chromalab app [--model M --weights W]            the web app (pip install ./shared[app])

``colorize`` and ``app`` find models through the ``chromalab.models`` entry points (see
:mod:`chromalab.models`); each paper package registers itself there, with the options of its
own that the two commands offer (a model's schema of :class:`~chromalab.models.ColorizeOption`):
the command line is parsed for ``--model`` first, then again with that model's options added as
an argument group named for it.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["main"]

logger = logging.getLogger("chromalab")


# --------------------------------------------------------------------------------------- info
def _cmd_info(args: argparse.Namespace) -> int:
    from chromalab.models import available_models

    rows = [("python", platform.python_version()), ("platform", platform.platform())]
    for dist in (
        "chromalab-shared",
        "torch",
        "torchvision",
        "lightning",
        "torchmetrics",
        "kornia",
        "webdataset",
        "jsonargparse",
    ):
        try:
            rows.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            rows.append((dist, "not installed"))
    rows.append(("cpu threads", str(torch.get_num_threads())))
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows.append(("cuda", f"{torch.version.cuda}: " + ", ".join(names)))
    else:
        rows.append(("cuda", "not available (CPU only)"))
    models = available_models()
    rows.append(("models", ", ".join(models) if models else "none installed"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


# -------------------------------------------------------------------------------------- prior
def _cmd_prior(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from chromalab.bins import ABBins
    from chromalab.color import rgb_to_lab
    from chromalab.data.collate import collate_skip_bad
    from chromalab.rebalance import PriorAccumulator, save_prior

    bins = ABBins.gamut() if args.bins == "gamut" else ABBins.grid(25, 10)
    dataset = _prior_dataset(args)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        collate_fn=collate_skip_bad,
    )
    acc = PriorAccumulator(bins)
    images = skipped = 0
    limit = args.limit
    with tqdm(total=limit, desc="prior", unit="img", disable=args.quiet) as bar:
        for batch in loader:
            if batch is None:
                continue
            skipped += int(batch.get("skipped", 0))
            rgb = batch["rgb"]
            if limit is not None:
                rgb = rgb[: max(limit - images, 0)]
            if rgb.shape[0] == 0:
                break
            ab = rgb_to_lab(rgb)[:, 1:, :: args.stride, :: args.stride]
            acc.update(ab)
            images += rgb.shape[0]
            bar.update(rgb.shape[0])
            if limit is not None and images >= limit:
                break
    if images == 0:
        print(f"error: no readable colour images in {args.data}", file=sys.stderr)
        return 1
    path = save_prior(
        args.output,
        acc.prior,
        bins,
        source=str(args.data),
        images=images,
        skipped=skipped,
        stride=args.stride,
        image_size=args.image_size,
    )
    print(f"wrote {path}: prior over {bins.num_bins} bins from {images} images ({skipped} skipped)")
    return 0


def _prior_dataset(args: argparse.Namespace):
    data = args.data
    if data == "capshapes":
        from chromalab.data.capshapes import CapShapes

        return CapShapes(length=args.limit or 2000, size=args.image_size or 64, seed=args.seed)
    path = Path(data)
    if path.is_dir():
        from chromalab.data.folders import ImageFolderDataset

        return ImageFolderDataset(path, image_size=args.image_size, train=False)
    if ".tar" in path.name or "{" in data:
        from chromalab.data.shards import make_shard_dataset

        return make_shard_dataset(data, image_size=args.image_size or 256, train=False)
    if path.is_file():
        from chromalab.data.folders import CaptionedImageDataset
        from chromalab.data.records import load_caption_records

        records = load_caption_records(path, image_root=args.image_root)
        return CaptionedImageDataset(records, image_size=args.image_size, train=False)
    raise FileNotFoundError(f"data source not found: {data}")


# --------------------------------------------------------------------------------------- data
def _cmd_data_capshapes(args: argparse.Namespace) -> int:
    from chromalab.data.capshapes import export_capshapes

    out = export_capshapes(
        args.out, n=args.n, format=args.format, seed=args.seed, size=args.size, start=args.start
    )
    print(f"wrote {args.n} CapShapes scenes ({args.format}) to {out}")
    return 0


# ----------------------------------------------------------------------------------- colorize
def _cmd_colorize(args: argparse.Namespace) -> int:
    from chromalab.inference import colorize_jobs, plan_jobs, read_captions
    from chromalab.models import load_colorizer, resolve_device

    device = resolve_device(args.device)
    model = load_colorizer(
        args.model,
        ckpt=args.ckpt,
        weights=args.weights,
        device=str(device),
        temperature=args.temperature,
        progress=not args.quiet,
        **_given_options(args).get(args.model, {}),
    )
    if (args.caption or args.captions) and not model.uses_captions:
        logger.warning("model %s ignores captions; --caption(s) have no effect", args.model)
    captions = read_captions(args.captions) if args.captions else None
    jobs = plan_jobs(args.inputs, args.output, args.format, args.caption, captions)
    if not jobs:
        print("error: no image files found in " + ", ".join(args.inputs), file=sys.stderr)
        return 1
    if model.uses_captions and not args.caption and not captions:
        raise ValueError(f"model {args.model} colorizes from a caption: pass --caption(s)")
    written, failed = colorize_jobs(
        model,
        jobs,
        size=args.size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        side_by_side=args.side_by_side,
        skip_existing=args.skip_existing,
        progress=not args.quiet,
        device=device,
        precision=args.precision,
    )
    print(
        f"colorized {written} image(s) into {args.output}"
        + (f"; {len(failed)} skipped:" if failed else "")
    )
    for path, reason in failed:
        print(f"  {path}: {reason}")
    return 0 if not failed else 2


# ------------------------------------------------------------------------------------------ app
def _cmd_app(args: argparse.Namespace) -> int:
    from chromalab.app import main as serve

    options = _given_options(args)
    try:
        serve(args.model, args.ckpt, args.weights, args.device, args.host, args.port,
              model_options=options)  # fmt: skip
    except ImportError as err:  # gradio is an optional extra: say how to install it
        raise ValueError(str(err)) from err
    return 0


# ------------------------------------------------------------------------- options of models
def _given_model(argv: Sequence[str]) -> str | None:
    """The value of ``--model`` in ``argv`` (``--model M`` or ``--model=M``), before parsing."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--model" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--model="):
            return arg.partition("=")[2]
    return None


def _dest(option) -> str:
    return "model_option" + option.cli_flag.replace("-", "_")


def _add_model_options(
    parser: argparse.ArgumentParser, command: str, models: Sequence[str], app: bool = False
) -> None:
    """One argument group per model of ``models`` with the options it declares (``app``: those
    that ``chromalab app`` takes as flags); records them for :func:`_given_options`. A flag two
    models share is added once and goes to both."""
    from chromalab.models import model_options

    declared: dict[str, tuple] = {}
    flags: set[str] = set()
    for model in models:
        options = tuple(o for o in model_options(model) if not app or o.app == "flag")
        declared[model] = options
        new = [o for o in options if o.cli_flag not in flags]
        if not new:
            continue
        group = parser.add_argument_group(f"options of model {model}")
        for option in new:
            kwargs: dict[str, Any] = {"dest": _dest(option), "default": None, "help": option.help}
            if option.type is bool:
                kwargs["action"] = (
                    argparse.BooleanOptionalAction if option.default else "store_true"
                )
            else:
                metavar = option.metavar
                if metavar is None and option.choices is None:  # argparse's would name the dest
                    metavar = option.cli_flag[2:].upper().replace("-", "_")
                kwargs |= {"type": option.type, "choices": option.choices, "metavar": metavar}
                if option.multiple:
                    kwargs["action"] = "append"
            try:
                group.add_argument(option.cli_flag, **kwargs)
            except argparse.ArgumentError as err:
                raise ValueError(
                    f"model {model} declares {option.cli_flag}, which chromalab {command} "
                    "already has: the plug-in must rename it"
                ) from err
            flags.add(option.cli_flag)
    parser.set_defaults(model_options=declared)


def _given_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per model, the values of its options that the command line gave (the others are left
    to the model's factory: its default may depend on its weights)."""
    declared: Mapping[str, tuple] = getattr(args, "model_options", {})
    given = {}
    for model, options in declared.items():
        values = {o.name: getattr(args, _dest(o), None) for o in options}
        given[model] = {k: v for k, v in values.items() if v is not None}
    return given


def _installed_models_help() -> str:
    from chromalab.models import available_models

    names = available_models()
    return ", ".join(names) if names else "none (install a paper package, e.g. ./packages/cic)"


def _app_models(model: str | None) -> list[str]:
    """The models whose options ``chromalab app`` takes: ``model``, else every installed one
    that loads (a broken plug-in is skipped with a warning, as the app does)."""
    from chromalab.models import available_models, loadable_model_options

    if model is not None:
        return [model]
    return list(loadable_model_options(available_models()))


# ------------------------------------------------------------------------------------- parser
def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of ``argv``: the model named by ``--model`` in ``argv`` adds its options to
    ``colorize`` and ``app`` (``app`` without ``--model``: the flags of every installed model).

    Raises:
        ValueError: ``--model`` names no installed model, or a model's option clashes with the
            command's own.
    """
    argv = list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    model = _given_model(argv)
    parser = argparse.ArgumentParser(
        prog="chromalab", description="chromalab: language-guided and automatic colorization."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions, device and installed models")
    info.set_defaults(func=_cmd_info)

    prior = sub.add_parser("prior", help="empirical ab prior of a dataset (CIC §3.2)")
    prior.add_argument(
        "--data",
        required=True,
        help="image folder, captions file, .tar shard pattern, or 'capshapes'",
    )
    prior.add_argument("-o", "--output", required=True, help="output .pt file")
    prior.add_argument(
        "--bins",
        choices=["gamut", "grid"],
        default="gamut",
        help="gamut: CIC's in-gamut bins; grid: the FiLM paper's 25x25 grid",
    )
    prior.add_argument(
        "--image-size",
        type=int,
        default=256,
        help="resize the shorter side and centre-crop to this size (default 256)",
    )
    prior.add_argument(
        "--stride",
        type=int,
        default=4,
        help="ab subsampling, as the training targets at 1/4 resolution (default 4)",
    )
    prior.add_argument("--limit", type=int, default=None, help="use at most this many images")
    prior.add_argument("--image-root", default=None, help="image folder for a captions file")
    prior.add_argument("--batch-size", type=int, default=32)
    prior.add_argument("--num-workers", type=int, default=0)
    prior.add_argument("--seed", type=int, default=0)
    prior.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    prior.set_defaults(func=_cmd_prior)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    caps = data_sub.add_parser("capshapes", help="export CapShapes scenes")
    caps.add_argument("--out", required=True, help="output folder")
    caps.add_argument("--n", type=int, required=True, help="number of scenes")
    caps.add_argument("--format", choices=["folder", "jsonl", "wds"], default="folder")
    caps.add_argument("--seed", type=int, default=0)
    caps.add_argument("--size", type=int, default=64)
    caps.add_argument("--start", type=int, default=0, help="first scene index")
    caps.set_defaults(func=_cmd_data_capshapes)

    col = sub.add_parser("colorize", help="colorize images with an installed model")
    col.add_argument("inputs", nargs="+", help="image files or folders")
    col.add_argument("-o", "--output", required=True, help="output folder (the input tree is kept)")
    col.add_argument(
        "--model",
        required=True,
        help=f"installed model: {_installed_models_help()}; "
        "`--model NAME --help` shows the options that model adds",
    )
    col.add_argument("--ckpt", default=None, help="Lightning checkpoint of the model")
    col.add_argument("--weights", default=None, help="released weights file, where supported")
    col.add_argument("--caption", default=None, help="caption for language-guided models")
    col.add_argument(
        "--captions",
        default=None,
        help="per-image captions: JSON {file: caption}, JSONL or CSV (file,caption); "
        "--caption is the fallback",
    )
    col.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="annealed-mean temperature, where the model decodes bins",
    )
    col.add_argument(
        "--size",
        type=int,
        default=None,
        help="network input side (default: the model's own, e.g. 256)",
    )
    col.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    col.add_argument("--batch-size", type=int, default=8, help="images per model call (8)")
    col.add_argument("--num-workers", type=int, default=0, help="image-decoding workers (0)")
    col.add_argument("--format", choices=["png", "jpg"], default="png", help="output format")
    col.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: bfloat16 autocast (faster where the hardware has it; changes numbers slightly)",
    )
    col.add_argument(
        "--side-by-side", action="store_true", help="write the grey input beside the result"
    )
    col.add_argument(
        "--skip-existing", action="store_true", help="skip inputs whose output exists (resume)"
    )
    col.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    if command == "colorize" and model is not None:
        _add_model_options(col, "colorize", [model])
    col.set_defaults(func=_cmd_colorize, subparser=col)

    app = sub.add_parser("app", help="the web app: colorize in the browser (needs gradio)")
    app.add_argument(
        "--model",
        default=None,
        help=f"model selected on the page, one of: {_installed_models_help()}",
    )
    app.add_argument("--ckpt", default=None, help="checkpoint filled in on the page")
    app.add_argument("--weights", default=None, help="weights filled in on the page")
    app.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    app.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: all)")
    app.add_argument("--port", type=int, default=7860)
    if command == "app":
        _add_model_options(app, "app", _app_models(model), app=True)
    app.set_defaults(func=_cmd_app, subparser=app)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chromalab`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
    except ValueError as err:  # an unknown --model
        print(f"error: {err}", file=sys.stderr)
        return 1
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _unknown_arguments(args, unknown, parser)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _unknown_arguments(
    args: argparse.Namespace, unknown: list[str], parser: argparse.ArgumentParser
) -> None:
    """Exit (status 2) naming the arguments nobody takes and, for a model's command, the
    options that the model does take."""
    message = f"unrecognized arguments: {' '.join(unknown)}"
    declared: Mapping[str, tuple] = getattr(args, "model_options", {})
    if args.command == "colorize":
        flags = ", ".join(o.cli_flag for o in declared.get(args.model, ()))
        has = f"these options of its own: {flags}" if flags else "no options of its own"
        message += f" (model {args.model} has {has})"
    getattr(args, "subparser", parser).error(message)


if __name__ == "__main__":
    raise SystemExit(main())
