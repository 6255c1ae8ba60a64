"""Every command a README shows is run by a test, or marked in the README as needing what is not
here. A command shown and neither run, referenced nor marked fails
:func:`test_every_readme_command_is_run_referenced_or_marked`, so a new README command cannot slip
in untested; an entry of :data:`COVERAGE` that no README shows any more fails it too.

Where commands are found: ``README.md``, ``shared/README.md`` and ``packages/*/README.md``:

* every command of a fenced ``bash`` / ``sh`` / ``shell`` / ``console`` block (continuation
  lines joined, ``#`` comment lines skipped, a ``console`` block's ``$`` prompt dropped);
* every inline code span of the prose that starts with a program (a console script of the
  project, ``python``, ``pip``, ``make``, ``torchrun``, ``sbatch``, ``docker``), except a mere
  mention of a command's name: the program alone, ``<script> <subcommand>`` (``chromalab
  colorize``, ``lcad fit``) or ``python -m <module>`` with nothing after it.

**The marker convention.** A command that needs what is not here (weights, data sets, GPUs,
nodes, a container engine) says so where it is shown: in a block, ``needs: <what>`` in the
command's trailing comment (after any other comment text)::

    docker build -f docker/Dockerfile.cpu -t chromalab:cpu .   # needs: a container engine
    film-color fit --config ... --model.init_from /weights/x.pth   # MSCOCO, §3; needs: MSCOCO

and for an inline command an HTML comment right after the span:
```` `sbatch examples/slurm/cic-2-nodes.sbatch` <!-- needs: a SLURM cluster --> ````.

**Every other command is covered by** :data:`COVERAGE` (keyed by the command as shown, comment
dropped, whitespace collapsed; one entry covers the command wherever it is shown):

* :class:`Run`: run in-process through its entry point (the console script's ``main``, a
  module's ``main`` for ``python -m``, a benchmark script's ``main``) from a sandbox folder in
  which the repository's ``packages/``, ``benchmarks/``, ... are linked and everything the
  commands write (``outputs/``, ``colorized/``, ...) lands in tmp. Small-size arguments are
  appended (the last value of an option wins: ``--trainer.max_steps 2``, ``--scenes 4``) and
  placeholders (``CKPT``, ``...``) are filled; commands that read another one's output run after
  it. ``chromalab app`` does not serve: the page's first press (``chromalab.app.run_colorize``)
  runs with the command's model and weights instead.
* :class:`Ref`: an existing test runs it (the test is checked to exist).
* ``make`` and ``pip install`` lines need no entry: the Makefile target is checked with
  ``make -n``, the install arguments are checked to be installable projects with the named
  extras, or packages pinned in ``constraints.txt``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", ROOT / "shared" / "README.md"] + sorted(
    ROOT.glob("packages/*/README.md")
)
#: the import names of the project: console scripts pointing into them are the project's
PACKAGES = ("chromalab", "cic", "film_color", "lcoins", "lcad")
SCRIPTS = {
    ep.name: ep
    for ep in metadata.entry_points(group="console_scripts")
    if ep.value.split(".", 1)[0].split(":", 1)[0] in PACKAGES
}
PROGRAMS = {*SCRIPTS, "python", "python3", "pip", "make", "torchrun", "sbatch", "docker"}
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
#: folders of the repository the commands read (configs, published weights, scripts)
LINKED = ("packages", "benchmarks", "shared", "examples", "docker")


# ------------------------------------------------------------------------- finding commands
@dataclass(frozen=True)
class Shown:
    """A command as a README shows it."""

    readme: str  # relative to the repository
    line: int
    command: str  # comment dropped, continuation lines joined, whitespace collapsed
    needs: str | None  # the marker's text, when marked


def _split_comment(line: str) -> tuple[str, str]:
    """``line`` cut at its first unquoted ``#`` that starts a word: (code, comment text)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i + 1 :].strip()
    return line, ""


def _needs(comment: str) -> str | None:
    match = re.search(r"\bneeds:\s*(.*\S)", comment)
    return match.group(1) if match else None


def _block_commands(readme: str, lines: list[str], start: int, info: str) -> Iterator[Shown]:
    pending, first = "", 0
    for offset, raw in enumerate(lines):
        line = raw.strip()
        if info == "console":
            if not line.startswith("$ ") and not pending:
                continue  # output
            line = line.removeprefix("$ ")
        if not pending and (not line or line.startswith("#")):
            continue
        code, comment = _split_comment(line)
        if not pending:
            first = start + offset
        if code.rstrip().endswith("\\"):
            pending += code.rstrip()[:-1] + " "
            continue
        command = " ".join((pending + code).split())
        pending = ""
        yield Shown(readme, first, command, _needs(comment))


def _is_mention(words: list[str]) -> bool:
    if len(words) == 1:
        return True
    if words[0] in SCRIPTS and len(words) == 2 and not words[1].startswith("-"):
        return True
    return words[0].startswith("python") and len(words) == 3 and words[1] == "-m"


def readme_commands(path: Path) -> list[Shown]:
    """The commands ``path`` shows, in order."""
    readme = path.relative_to(ROOT).as_posix()
    lines = path.read_text().splitlines()
    shown: list[Shown] = []
    prose = list(lines)
    fence, info, start = None, "", 0
    for number, line in enumerate(lines, 1):
        match = re.match(r"\s*(```+|~~~+)\s*([\w+-]*)", line)
        if fence is None and match:
            fence, info, start = match.group(1), match.group(2).lower(), number
            prose[number - 1] = ""
        elif fence is not None:
            prose[number - 1] = ""
            if line.strip() == fence:
                if info in SHELL_BLOCKS:
                    block = lines[start : number - 1]
                    shown += _block_commands(readme, block, start + 1, info)
                fence = None
    text = "\n".join(prose)
    for match in re.finditer(r"`([^`]+)`(?:\s*<!--(.*?)-->)?", text):
        words = match.group(1).split()
        if not words or words[0] not in PROGRAMS or _is_mention(words):
            continue
        line = text.count("\n", 0, match.start()) + 1
        shown.append(Shown(readme, line, " ".join(words), _needs(match.group(2) or "")))
    return sorted(shown, key=lambda s: s.line)


def all_commands() -> list[Shown]:
    return [shown for path in READMES for shown in readme_commands(path)]


# ---------------------------------------------------------------------------------- coverage
@dataclass(frozen=True)
class Run:
    """Run the command, with ``replace`` ((shown, filled) pairs, first occurrence each) applied
    and ``extra`` arguments appended, after the commands ``after`` (keys of :data:`COVERAGE`)
    and ``prepare`` (a function of the sandbox folder: inputs a user would have). ``files`` must
    exist afterwards; ``json_keys``: the command prints a JSON object with these keys. For a
    ``benchmarks/`` script, ``patches`` ((name, value) pairs) are set on its module: the sizes
    its command line does not reach."""

    extra: tuple[str, ...] = ()
    replace: tuple[tuple[str, str], ...] = ()
    after: tuple[str, ...] = ()
    prepare: Callable[[Path], None] | None = None
    files: tuple[str, ...] = ()
    json_keys: tuple[str, ...] = ()
    patches: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Ref:
    """Run by an existing test: ``tests/<file>.py::<test function>`` or
    ``tests/<file>.py::<TestClass>::<test method>`` (inherited ones included)."""

    test: str


TRAINER = (
    "--trainer.max_steps", "2",
    "--trainer.limit_val_batches", "1",
    "--trainer.limit_test_batches", "1",
    "--trainer.limit_predict_batches", "1",
    "--trainer.num_sanity_val_steps", "0",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
)  # fmt: skip
DATA = (
    "--data.batch_size", "2",
    "--data.eval_batch_size", "2",
    "--data.num_workers", "0",
    "--data.capshapes_train_length", "8",
    "--data.capshapes_val_length", "2",
)  # fmt: skip
#: a LightningCLI run at small size (the configs' models are kept, and their image sizes but
#: lcad's: its networks are convolutional, 32 px make each of its steps 4x cheaper)
SMALL = TRAINER + DATA
LCAD_SMALL = SMALL + ("--data.image_size", "32", "--data.capshapes_size", "32")
#: lcad's evaluate command: one scene at 32 px, 2 DDIM steps
LCAD_EVALUATE = ("--scenes", "1", "--size", "32", "--set", "sampling.steps=2")
#: ``--ckpt_path last``: each package's exact-resume test runs it on its tiny config
RESUME_TEST = "::test_exact_resume_after_kills_at_random_moments"
CAPTION = "a red circle and a blue square"

CIC_FIT = "cic fit --config packages/cic/configs/capshapes.yaml"
CIC_CKPT = "outputs/cic-capshapes/checkpoints/last.ckpt"
FCNN_FIT = (
    "film-color fit --config packages/film_color/configs/capshapes.yaml "
    "--model.network.conditioning none --trainer.max_steps 4000 "
    "--trainer.default_root_dir outputs/fcnn --trainer.callbacks.dirpath outputs/fcnn/checkpoints"
)
FILM_FIT = (
    "film-color fit --config packages/film_color/configs/capshapes.yaml "
    "--model.init_from outputs/fcnn/checkpoints/last.ckpt"
)
FILM_CKPT = "outputs/film_color-capshapes/checkpoints/last.ckpt"
LCOINS_FIT = "lcoins fit --config packages/lcoins/configs/capshapes.yaml"
LCOINS_CKPT = "outputs/lcoins-capshapes/checkpoints/last.ckpt"
LCOINS_V1 = "benchmarks/weights/capshapes-lcoins-v1"
LCOINS_RECIPE = "packages/lcoins/configs/recipes/capshapes-lcoins-v1.yaml"
LCOINS_TABLE1_V1 = (
    f"python benchmarks/lcoins_table1.py --recipe {LCOINS_RECIPE} --steps 1000 --schedule-steps "
    "4500 --scenes 2048 --runs outputs/lcoins-bench-v1 --full-checkpoint "
    "outputs/lcoins-capshapes-v1/kept/step=1000.ckpt --unseen-steps 0"
)
LCAD_STAGE_0 = (
    "lcad fit --stage autoencoder --config packages/lcad/configs/capshapes-autoencoder.yaml"
)
LCAD_STAGE_1 = (
    "lcad fit --stage compression --config packages/lcad/configs/capshapes-compression.yaml"
)
LCAD_STAGE_2 = "lcad fit --stage diffusion --config packages/lcad/configs/capshapes-diffusion.yaml"
LCAD_CKPT = "outputs/lcad-capshapes/diffusion/checkpoints/last.ckpt"
FILM_EVALUATE_KEYS = ("acc@1", "acc@5", "caption_consistency", "manipulation_accuracy", "loss")


def _save_my_cic(sandbox: Path) -> None:
    """``module.save_pretrained("my-cic")``, as the README's paragraph on weights folders says."""
    from cic.module import CICModule

    CICModule.load_from_checkpoint(sandbox / CIC_CKPT).save_pretrained(sandbox / "my-cic")


def _publish_film(sandbox: Path) -> None:
    """What ``python -m film_color.recipe ... --publish outputs/capshapes-film-v1`` leaves (the
    recipe itself is run by ``tests/film_color/test_recipe.py``): a published FILM folder."""
    from film_color.weights import publish

    publish(sandbox / FILM_CKPT, sandbox / "outputs" / "capshapes-film-v1")


def _caption_file(sandbox: Path) -> None:
    """``val.json`` in L-CoIns' ``[[file, caption], ...]`` format over ``images/``."""
    from chromalab.data import CapShapes
    from chromalab.io import save_image

    (sandbox / "images").mkdir()
    rows = []
    for index, scene in enumerate(CapShapes(length=2, size=64, seed=3)):
        save_image(scene["rgb"], sandbox / "images" / f"scene{index}.png")
        rows.append([f"scene{index}.png", scene["caption"]])
    (sandbox / "val.json").write_text(json.dumps(rows))


COVERAGE: dict[str, Run | Ref] = {
    # ------------------------------------------------------------------ the chromalab command
    "chromalab info": Run(),
    "chromalab data capshapes --out data/capshapes --n 1000 --format wds": Run(
        extra=("--n", "8"), files=("data/capshapes",)
    ),
    "chromalab data capshapes --format wds": Run(extra=("--out", "data/shards", "--n", "4")),
    "chromalab prior --data /path/to/imagenet/train -o prior.pt": Run(
        replace=(("/path/to/imagenet/train", "photos"),),
        extra=("--image-size", "32", "-q"),
        files=("prior.pt",),
    ),
    "chromalab colorize --model cic --ckpt model.ckpt photos/ -o colorized/": Run(
        replace=(("model.ckpt", CIC_CKPT),), extra=("-q",), after=(CIC_FIT,)
    ),
    "chromalab colorize --model <name>": Run(
        replace=(("<name>", f"cic --ckpt {CIC_CKPT} photos/ -o colorized/"),),
        extra=("-q",),
        after=(CIC_FIT,),
    ),
    "chromalab colorize --model NAME --help": Run(replace=(("NAME", "cic"),)),
    "chromalab colorize --model <name> --help": Run(replace=(("<name>", "cic"),)),
    "chromalab colorize --model lcad --help": Run(),
    "chromalab colorize --model cic --weights my-cic ...": Run(
        replace=(("...", "photos/ -o colorized/my-cic"),),
        extra=("-q",),
        after=(CIC_FIT,),
        prepare=_save_my_cic,
        files=("colorized/my-cic/scene0.png",),
    ),
    # ------------------------------------------------------------------------------------ cic
    CIC_FIT: Run(extra=SMALL, files=(CIC_CKPT,)),
    f"{CIC_FIT} --ckpt_path last": Ref("tests/cic/test_package.py::TestCIC" + RESUME_TEST),
    f"cic validate --config packages/cic/configs/capshapes.yaml --ckpt_path {CIC_CKPT}": Run(
        extra=SMALL, after=(CIC_FIT,)
    ),
    (
        "cic test --config packages/cic/configs/capshapes.yaml --ckpt_path m.ckpt "
        "--model.temperature 0.1"
    ): Run(replace=(("m.ckpt", CIC_CKPT),), extra=SMALL, after=(CIC_FIT,)),
    f"chromalab colorize --model cic --ckpt {CIC_CKPT} photos/ -o colorized/": Run(
        extra=("-q",), after=(CIC_FIT,), files=("colorized/scene0.png",)
    ),
    # ----------------------------------------------------------------------------- film_color
    FCNN_FIT: Run(extra=SMALL, files=("outputs/fcnn/checkpoints/last.ckpt",)),
    FILM_FIT: Run(extra=SMALL, after=(FCNN_FIT,), files=(FILM_CKPT,)),
    "film-color fit --config packages/film_color/configs/capshapes.yaml --ckpt_path last": Ref(
        "tests/film_color/test_package.py::TestFilmColor" + RESUME_TEST
    ),
    (
        "film-color validate --config packages/film_color/configs/capshapes.yaml "
        f"--ckpt_path {FILM_CKPT}"
    ): Run(extra=SMALL, after=(FILM_FIT,)),
    "python -m film_color.evaluate CKPT --split test --scenes 2048": Run(
        replace=(("CKPT", FILM_CKPT),),
        extra=("--scenes", "4"),
        after=(FILM_FIT,),
        json_keys=FILM_EVALUATE_KEYS,
    ),
    "python benchmarks/film_table1.py": Run(
        extra=("--fcnn-steps", "2", "--steps", "2", "--long-steps", "0", "--scenes", "4"),
        patches=(("CAPSHAPES_CONFIG", ROOT / "packages" / "film_color" / "configs" / "tiny.yaml"),),
        files=("benchmark-results/film_table1.md",),
    ),
    (
        "chromalab colorize --model film_color --weights benchmarks/weights/capshapes-film-v1 "
        '--caption "a red heart and a blue star on a striped green background" photos/ '
        "-o colorized/"
    ): Run(extra=("-q",)),
    "film-color explain --ckpt benchmarks/weights/capshapes-film-v1 --capshapes 4 -o maps/": Run(
        extra=("--capshapes", "2")
    ),
    "python -m film_color.demo": Ref(
        "tests/film_color/test_published_weights.py::test_the_demo_shows_the_published_folder"
    ),
    "chromalab app --model film_color --weights benchmarks/weights/capshapes-film-v1": Run(),
    "python -m film_color.evaluate benchmarks/weights/capshapes-film-v1 --split test --scenes 2048": Ref(  # noqa: E501
        "tests/film_color/test_published_weights.py::test_the_readme_scoring_command"
    ),
    (
        "python -m film_color.recipe packages/film_color/configs/recipes/capshapes-film-v1 "
        "--out outputs/recipes/capshapes-film-v1 --publish outputs/capshapes-film-v1"
    ): Ref("tests/film_color/test_recipe.py::test_the_recipe_chain_runs_in_tiny_form"),
    "python -m film_color.evaluate outputs/capshapes-film-v1 --split test --scenes 2048": Run(
        extra=("--scenes", "4"),
        after=(FILM_FIT,),
        prepare=_publish_film,
        json_keys=FILM_EVALUATE_KEYS,
    ),
    # --------------------------------------------------------------------------------- lcoins
    LCOINS_FIT: Run(extra=SMALL, files=(LCOINS_CKPT,)),
    f"{LCOINS_FIT} --ckpt_path last": Ref("tests/lcoins/test_package.py::TestLCoIns" + RESUME_TEST),
    f"lcoins validate --config packages/lcoins/configs/capshapes.yaml --ckpt_path {LCOINS_CKPT}": Run(  # noqa: E501
        extra=SMALL, after=(LCOINS_FIT,)
    ),
    f"lcoins test --config packages/lcoins/configs/capshapes.yaml --ckpt_path {LCOINS_CKPT}": Ref(
        "tests/lcoins/test_package.py::TestLCoIns::test_fit_validate_test_predict"
    ),
    (
        f'chromalab colorize --model lcoins --ckpt {LCOINS_CKPT} --caption "a red car beside a '
        'blue car" photos/ -o colorized/'
    ): Run(extra=("-q",), after=(LCOINS_FIT,)),
    f"lcoins explain --ckpt {LCOINS_CKPT} --capshapes 8 -o groups/": Ref(
        "tests/lcoins/test_cli.py::test_explain_paints_the_group_assignment"
    ),
    f"chromalab app --model lcoins --ckpt {LCOINS_CKPT}": Run(after=(LCOINS_FIT,)),
    f"python -m lcoins.evaluate {LCOINS_CKPT} --split test --scenes 512": Run(
        extra=("--scenes", "2"), after=(LCOINS_FIT,)
    ),
    """python -m lcoins.evaluate CKPT --options '{"min_objects": 2, "shared_noun_prob": 1.0}'""": Run(  # noqa: E501
        replace=(("CKPT", LCOINS_CKPT),), extra=("--scenes", "2"), after=(LCOINS_FIT,)
    ),
    "python -m lcoins.evaluate CKPT --captions val.json --image-root images/": Run(
        replace=(("CKPT", LCOINS_CKPT),), after=(LCOINS_FIT,), prepare=_caption_file
    ),
    "python benchmarks/lcoins_table1.py --steps 6000": Ref(
        "tests/lcoins/test_table1_benchmark.py::test_rows_are_the_ablations_with_the_papers_numbers"
    ),
    LCOINS_TABLE1_V1: Ref("tests/lcoins/test_table1_benchmark.py::test_rows_at_a_main_runs_scale"),
    f"python -m lcoins.evaluate {LCOINS_V1} --split test --scenes 2048": Ref(
        "tests/lcoins/test_published_weights.py::test_the_readme_scoring_command"
    ),
    f"chromalab app --model lcoins --weights {LCOINS_V1}": Run(),
    "python -m lcoins.demo": Ref(
        "tests/lcoins/test_published_weights.py::test_the_demo_shows_the_published_folder"
    ),
    "python benchmarks/lcoins_published.py": Ref(
        "tests/lcoins/test_published_weights.py::test_the_held_out_table_benchmark"
    ),
    f"{LCOINS_FIT} --config {LCOINS_RECIPE}": Ref(
        "tests/lcoins/test_recipe.py::test_the_recipes_trainer_builds"
    ),
    (
        "python -m lcoins.publish outputs/lcoins-capshapes-v1/checkpoints/last.ckpt "
        "outputs/capshapes-lcoins-v1 --recipe packages/lcoins/configs/capshapes.yaml "
        f"{LCOINS_RECIPE}"
    ): Ref(
        "tests/lcoins/test_publish.py::"
        "test_the_card_gives_the_files_sha256_the_recipe_and_the_scoring_command"
    ),
    "python benchmarks/lcoins_speed.py": Ref(
        "tests/lcoins/test_speed_benchmark.py::test_both_precisions_are_measured_against_fp32"
    ),
    # ----------------------------------------------------------------------------------- lcad
    LCAD_STAGE_0: Run(extra=LCAD_SMALL),
    "lcad fit --stage ...": Run(
        replace=(("...", LCAD_STAGE_0.removeprefix("lcad fit --stage ")),),
        extra=LCAD_SMALL,
    ),
    LCAD_STAGE_1: Run(extra=LCAD_SMALL, after=(LCAD_STAGE_0,)),
    LCAD_STAGE_2: Run(extra=LCAD_SMALL, after=(LCAD_STAGE_1,), files=(LCAD_CKPT,)),
    f"{LCAD_STAGE_2} --ckpt_path last": Ref(
        "tests/lcad/test_package.py::TestDiffusion" + RESUME_TEST
    ),
    (
        f'chromalab colorize --model lcad --ckpt {LCAD_CKPT} --caption "{CAPTION}" photos/ '
        "-o colorized/"
    ): Run(extra=("--steps", "2", "-q"), after=(LCAD_STAGE_2,)),
    (
        "lcad validate --stage diffusion --config packages/lcad/configs/capshapes-diffusion.yaml "
        f"--ckpt_path {LCAD_CKPT}"
    ): Ref("tests/lcad/test_package.py::TestDiffusion::test_fit_validate_test_predict"),
    "lcad predict --stage diffusion --config ... --ckpt_path ...": Ref(
        "tests/lcad/test_package.py::TestDiffusion::test_fit_validate_test_predict"
    ),
    f"python -m lcad.evaluate {LCAD_CKPT} --scenes 512": Run(
        extra=LCAD_EVALUATE, after=(LCAD_STAGE_2,)
    ),
    "python -m lcad.evaluate ... --set sampling.lic=false": Run(
        replace=(("...", LCAD_CKPT),), extra=LCAD_EVALUATE, after=(LCAD_STAGE_2,)
    ),
    "python -m lcad.evaluate CKPT --stage compression": Run(
        replace=(("CKPT", "outputs/lcad-capshapes/compression/checkpoints/last.ckpt"),),
        extra=("--scenes", "2", "--size", "32"),
        after=(LCAD_STAGE_1,),
    ),
    "python benchmarks/lcad_table1.py --scenes 256": Ref(
        "tests/lcad/test_table1_benchmark.py::test_reconstruction_then_table_1"
    ),
    "python benchmarks/lcad_sampling.py": Ref(
        "tests/lcad/test_sampling_benchmark.py::test_every_table_is_measured"
    ),
}


def _key(command: str) -> str:
    return " ".join(command.split())


COVERAGE = {_key(k): v for k, v in COVERAGE.items()}


def _checked_without_running(command: str) -> bool:
    words = command.split()
    return words[0] == "make" or words[:2] == ["pip", "install"]


# ------------------------------------------------------------------------------ the sandbox
def _press_once(model=None, ckpt=None, weights=None, device=None, host=None, port=None, **options):
    """``chromalab app`` without serving: the page's first press, with the command's model and
    weights, on the sandbox's photos (``chromalab.app.run_colorize``: what the page runs)."""
    from chromalab.app import ColorizerCache, run_colorize

    cache = ColorizerCache("cpu", **options)
    photos = sorted(str(p) for p in Path("photos").iterdir())
    gallery, written, status = run_colorize(
        cache, photos, model, ckpt, weights, CAPTION, {"steps": 2}, out_dir="app-results"
    )
    assert len(written) == len(photos) and gallery, status
    print(status)


class Sandbox:
    """A folder in which README commands run as a user would type them (relative paths),
    memoized by their final arguments; the repository's folders they read are linked in."""

    def __init__(self, root: Path) -> None:
        from chromalab.data import CapShapes
        from chromalab.io import save_image

        self.root = root
        for name in LINKED:
            if (ROOT / name).exists():
                (root / name).symlink_to(ROOT / name, target_is_directory=True)
        (root / "photos").mkdir()
        for index, scene in enumerate(CapShapes(length=2, size=64, seed=5)):
            save_image(scene["rgb"], root / "photos" / f"scene{index}.png")
        self.done: dict[tuple[str, ...], BaseException | str] = {}
        self.prepared: set[Callable] = set()

    def argv(self, key: str) -> list[str]:
        spec = COVERAGE[key]
        assert isinstance(spec, Run)
        command = key
        for shown, filled in spec.replace:
            assert shown in command, f"{shown!r} is not in {command!r}"
            command = command.replace(shown, filled, 1)
        return [*shlex.split(command), *spec.extra]

    def ensure(self, key: str) -> str:
        """Run the command ``key`` (once), after its prerequisites; its standard output."""
        spec = COVERAGE[key]
        for before in spec.after:
            try:
                self.ensure(_key(before))
            except BaseException as err:
                raise AssertionError(f"needs `{before}`, which failed: {err!r}") from err
        argv = tuple(self.argv(key))
        if argv not in self.done:
            try:
                if spec.prepare is not None and spec.prepare not in self.prepared:
                    self.prepared.add(spec.prepare)
                    spec.prepare(self.root)
                self.done[argv] = self.execute(list(argv), spec)
            except BaseException as err:  # remembered: a prerequisite fails its dependents
                self.done[argv] = err
        result = self.done[argv]
        if isinstance(result, BaseException):
            raise result
        return result

    def execute(self, argv: list[str], spec: Run) -> str:
        program, *args = argv
        stdout = io.StringIO()
        threads = torch.get_num_threads()
        saved_argv = sys.argv
        with contextlib.ExitStack() as stack:
            stack.enter_context(contextlib.chdir(self.root))
            stack.enter_context(contextlib.redirect_stdout(stdout))
            patch = stack.enter_context(pytest.MonkeyPatch.context())
            try:
                if program in SCRIPTS:
                    if program == "chromalab" and args[:1] == ["app"]:
                        patch.setattr("chromalab.app.main", _press_once)
                    code = _call(SCRIPTS[program].load(), program, args)
                elif program.startswith("python") and args[:1] == ["-m"]:
                    module = importlib.import_module(args[1])
                    code = _call(module.main, args[1], args[2:])
                elif program.startswith("python") and args[0].endswith(".py"):
                    code = self._script(patch, spec, args[0], args[1:])
                else:
                    raise AssertionError(f"no way to run {program!r} here: mark it or map it")
            finally:
                sys.argv = saved_argv
                torch.set_num_threads(threads)
        out = stdout.getvalue()
        assert code == 0, f"exit status {code}; output:\n{out[-3000:]}"
        return out

    def _script(self, patch: pytest.MonkeyPatch, spec: Run, script: str, args: list[str]) -> int:
        """A ``benchmarks/`` script, its results and runs redirected into the sandbox."""
        from tests.training import benchmark_module

        path = Path(script)
        assert path.parent.as_posix() == "benchmarks", f"not a benchmark script: {script}"
        with benchmark_module(path.stem) as module:
            common = sys.modules["_common"]
            patch.setattr(common, "RESULTS", self.root / "benchmark-results")
            if hasattr(module, "RUNS"):
                patch.setattr(module, "RUNS", self.root / "benchmark-runs")
            for name, value in spec.patches:
                patch.setattr(module, name, value)
            return _call(module.main, script, args)


def _call(main: Callable, program: str, args: list[str]) -> int:
    """``main`` as its console script calls it: ``sys.argv`` set, an exit status."""
    takes_argv = bool(inspect.signature(main).parameters)
    # a main given its arguments reads nothing else (LightningCLI warns when sys.argv has more)
    sys.argv = [program] if takes_argv else [program, *args]
    try:
        result = main(args) if takes_argv else main()
    except SystemExit as exit_:
        return 0 if exit_.code in (0, None) else exit_.code
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("readme"))


# ------------------------------------------------------------------------------------- tests
def test_every_readme_command_is_run_referenced_or_marked():
    shown = all_commands()
    assert len(shown) > 40  # the finder finds the READMEs' commands
    loose = [
        f"{s.readme}:{s.line}: {s.command}"
        for s in shown
        if s.needs is None and not _checked_without_running(s.command) and s.command not in COVERAGE
    ]
    assert not loose, (
        "README commands neither run by a test (COVERAGE in tests/test_readme_commands.py) nor "
        "marked `# needs: <what>`:\n" + "\n".join(loose)
    )
    keys = {s.command for s in shown if s.needs is None}
    stale = [key for key in COVERAGE if key not in keys]
    assert not stale, "COVERAGE entries no README shows unmarked:\n" + "\n".join(stale)
    for spec in COVERAGE.values():
        for before in getattr(spec, "after", ()):
            assert _key(before) in COVERAGE, before


def test_the_finder_reads_blocks_inline_spans_and_markers(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(
        "Run `make lint` or `chromalab colorize` (a mention), `sbatch x.sbatch` <!-- needs: SLURM -->.\n"  # noqa: E501
        "```bash\n"
        "# a comment line\n"
        "cic fit --config a.yaml \\\n"
        '    --data.x "a # b"   # resume; needs: ImageNet\n'
        "\n"
        "lcad fit --stage ...   # plain comment\n"
        "```\n"
        "```python\nimport chromalab\n```\n"
        "```console\n$ chromalab info\nversions\n```\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = [(s.line, s.command, s.needs) for s in readme_commands(readme)]
    assert found == [
        (1, "make lint", None),
        (1, "sbatch x.sbatch", "SLURM"),
        (4, 'cic fit --config a.yaml --data.x "a # b"', "ImageNet"),
        (7, "lcad fit --stage ...", None),
        (13, "chromalab info", None),
    ]


@pytest.mark.parametrize(
    "key", [k for k, v in COVERAGE.items() if isinstance(v, Ref)], ids=lambda k: k[:60]
)
def test_a_referenced_test_exists(key):
    """The named test is collected from its file: a function, or a method of a ``Test`` class
    (inherited ones included)."""
    path, *names = COVERAGE[key].test.split("::")
    assert (ROOT / path).is_file() and path.startswith("tests/"), path
    found = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    for name in names:
        found = getattr(found, name, None)
        assert found is not None, f"{COVERAGE[key].test} does not exist"
    assert names[-1].startswith("test") and callable(found)
    assert len(names) == 1 or names[0].startswith("Test"), COVERAGE[key].test


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([\w.-]+)\s*:(?!=)", text, re.MULTILINE))


@pytest.mark.parametrize(
    "command",
    sorted({s.command for s in all_commands() if _checked_without_running(s.command)}),
)
def test_make_and_pip_lines(command):
    words = shlex.split(command)
    if words[0] == "make":
        targets = [w for w in words[1:] if "=" not in w]
        assert set(targets) <= _make_targets(), f"no such Makefile target: {targets}"
        for assignment in (w for w in words[1:] if w.startswith("DEMOS=")):
            for module in assignment.split("=", 1)[1].split():
                assert importlib.util.find_spec(module), f"DEMOS names no module {module}"
        if shutil.which("make"):
            dry = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True,
                                 text=True, timeout=60)  # fmt: skip
            assert dry.returncode == 0, dry.stderr
        return
    pinned = (ROOT / "constraints.txt").read_text()
    for argument in (w for w in words[2:] if not w.startswith("-")):
        match = re.fullmatch(r"(\./[\w./-]+?)/?(?:\[([\w,-]+)\])?", argument)
        if match is None:  # a requirement from the package index
            assert re.search(rf"^{re.escape(argument)}==", pinned, re.MULTILINE), argument
            continue
        project = tomllib.loads((ROOT / match.group(1) / "pyproject.toml").read_text())["project"]
        extras = set(project.get("optional-dependencies", {}))
        wanted = set((match.group(2) or "").split(",")) - {""}
        assert wanted <= extras, f"{argument}: no extra {wanted - extras}"


@pytest.mark.parametrize("key", [k for k, v in COVERAGE.items() if isinstance(v, Run)])
def test_the_command_runs(key, sandbox):
    spec = COVERAGE[key]
    out = sandbox.ensure(key)
    for name in spec.files:
        assert (sandbox.root / name).exists(), f"{name} was not written"
    if spec.json_keys:
        printed = json.loads(out[out.index("{") :])
        assert set(spec.json_keys) <= set(printed), sorted(printed)
        assert all(0 <= printed[k] <= 1 for k in spec.json_keys if k != "loss"), printed


def test_the_pre_commit_hooks_run_the_pinned_ruff():
    """The contributors' hooks (``.pre-commit-config.yaml``) are CI's ``make lint``: ruff's check
    and format, at the version constraints.txt pins."""
    import yaml

    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (repo,) = [r for r in config["repos"] if r["repo"].endswith("/ruff-pre-commit")]
    pinned = re.search(r"^ruff==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert repo["rev"] == f"v{pinned.group(1)}"
    assert [hook["id"] for hook in repo["hooks"]] == ["ruff-check", "ruff-format"]
    assert "make lint" in (ROOT / ".ci" / "run").read_text()
