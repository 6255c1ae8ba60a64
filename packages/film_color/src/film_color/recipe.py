"""Run a training recipe: a folder of stage configs applied in order, each stage continuing the
previous one's weights with a fresh optimizer (``--model.init_from``).

A recipe folder holds ``NN-name.yaml`` files; each is a ``film-color fit`` config layered over
the base config (``configs/capshapes.yaml``). Stage ``k`` trains into ``OUT/NN-name`` (layout of
:func:`chromalab.runs.train_or_reuse`: a finished stage is reused, an interrupted one resumed
exactly) and starts from stage ``k-1``'s ``last.ckpt``. ``--publish`` writes the last stage's
weights as a ``save_pretrained`` folder: safetensors and JSON, no training state
(:func:`film_color.weights.publish`).

::

    python -m film_color.recipe packages/film_color/configs/recipes/capshapes-film-v1 \\
        --out outputs/recipes/capshapes-film-v1 --publish outputs/capshapes-film-v1
    python -m film_color.recipe RECIPE --max-steps 1 --out /tmp/check     # every stage, 1 step
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import yaml

from chromalab.runs import train_or_reuse
from film_color.cli import run
from film_color.demo import CAPSHAPES_CONFIG
from film_color.weights import publish as publish_weights

__all__ = ["main", "run_recipe", "stage_steps", "stages"]


def stages(recipe: str | Path) -> list[Path]:
    """The stage configs of a recipe folder, in order (sorted ``*.yaml`` names)."""
    recipe = Path(recipe)
    found = sorted(recipe.glob("*.yaml"))
    if not found:
        raise FileNotFoundError(f"no stage configs (*.yaml) in recipe folder {recipe}")
    return found


def stage_steps(stage: Path) -> int:
    """The ``trainer.max_steps`` a stage config asks for."""
    config = yaml.safe_load(stage.read_text()) or {}
    steps = (config.get("trainer") or {}).get("max_steps")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{stage}: a recipe stage must set trainer.max_steps >= 1, got {steps!r}")
    return steps


def run_recipe(
    recipe: str | Path,
    out: str | Path,
    *,
    base: str | Path = CAPSHAPES_CONFIG,
    max_steps: int | None = None,
    overrides: Sequence[str] = (),
    publish: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train every stage of ``recipe`` into ``out``; returns the last stage's ``last.ckpt``.

    Args:
        recipe: the recipe folder.
        out: where the stages' runs go (``out/<stage name>``).
        base: the config every stage is layered over.
        max_steps: train each stage for this many steps instead of its own (a quick check of
            the whole chain).
        overrides: further ``fit`` arguments for every stage.
        publish: write the final weights to this ``save_pretrained`` folder (safetensors,
            :func:`film_color.weights.publish`).
        progress: show Lightning's progress bar.
    """
    configs = stages(recipe)
    steps = [max_steps or stage_steps(stage) for stage in configs]  # fail before training
    previous: Path | None = None
    for number, (stage, budget) in enumerate(zip(configs, steps, strict=True), start=1):
        print(f"== stage {number}/{len(configs)}: {stage.name} ({budget} steps)", flush=True)
        init = ["--model.init_from", str(previous)] if previous is not None else []
        previous, _ = train_or_reuse(
            run, Path(out) / stage.stem, [base, stage], budget, [*init, *overrides],
            progress=progress,
        )  # fmt: skip
    assert previous is not None
    if publish is not None:
        publish_weights(previous, publish)
        print(f"published {publish}")
    return previous


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m film_color.recipe RECIPE [--out DIR] [--max-steps N] [--publish DIR]``."""
    parser = argparse.ArgumentParser(description="train a film_color recipe, stage by stage")
    parser.add_argument("recipe", help="a recipe folder of NN-name.yaml stage configs")
    parser.add_argument("--out", default=None, help="runs folder (default outputs/recipes/NAME)")
    parser.add_argument("--base", default=str(CAPSHAPES_CONFIG), help="config under every stage")
    parser.add_argument("--max-steps", type=int, default=None, help="steps per stage (a check)")
    parser.add_argument("--publish", default=None, help="write the final weights to this folder")
    args, overrides = parser.parse_known_args(argv)
    out = args.out or str(Path("outputs") / "recipes" / Path(args.recipe).name)
    return run_recipe(
        args.recipe, out, base=args.base, max_steps=args.max_steps, overrides=overrides,
        publish=args.publish,
    )  # fmt: skip


if __name__ == "__main__":
    main()
