"""Mutation sweep (``make mutants``): mutmut 3 on one module at a time, against the test files
that exercise it, printing the score per module.

mutmut 3 mutates a copy of the sources under ``mutants/`` of the folder it runs in and finds the
copy through ``./src`` only, so it cannot run from the monorepo's root (sources in
``shared/src`` and ``packages/*/src``). Each module gets its own workspace,
``outputs/mutants/<module>/``: ``src/<package>`` (a copy of the package), ``tests/`` (a copy of
the repository's) and a ``pyproject.toml`` (the root's pytest settings and this module's
``[tool.mutmut]``). The real sources are never written; the workspace stays after the run, so
``cd outputs/mutants/<module> && ../../../.venv/bin/mutmut show <mutant>`` shows a survivor.
A module can sweep some functions of a file only (``functions``): in the workspace's copy, every
other function's header gets mutmut's ``# pragma: no mutate block``.

    python tools/mutation_sweep.py                       # every module
    python tools/mutation_sweep.py lcoins-losses core-hub  # some (``make mutants MODULES=...``)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "outputs" / "mutants"
MUTMUT = Path(sys.executable).parent / "mutmut"


@dataclass(frozen=True)
class Module:
    """``files`` of the package in ``root``/src/``package``, swept with ``tests``; of the files
    named in ``functions``, only those functions (qualified names: ``Class.method``)."""

    root: str
    package: str
    files: tuple[str, ...]
    tests: tuple[str, ...]
    functions: dict[str, tuple[str, ...]] = field(default_factory=dict)


MODULES: dict[str, Module] = {
    "lcoins-losses": Module(
        "packages/lcoins", "lcoins", ("losses.py",), ("tests/lcoins/test_losses.py",)
    ),
    "lcad-losses": Module("packages/lcad", "lcad", ("losses.py",), ("tests/lcad/test_losses.py",)),
    "lcoins-grouping": Module(
        "packages/lcoins", "lcoins", ("grouping.py",), ("tests/lcoins/test_grouping.py",)
    ),
    # the guidance and the sampling loop of pipeline.py (its input checks, masks and tokens
    # aside); test_segment.py samples with SAM prompts and automatic masks
    "lcad-guidance": Module(
        "packages/lcad",
        "lcad",
        ("pipeline.py",),
        ("tests/lcad/test_pipeline.py", "tests/lcad/test_segment.py"),
        {
            "pipeline.py": (
                "make_scheduler",
                "edit_mode",
                "LCADPipeline.denoise_step",
                "LCADPipeline.prepare_latents",
                "LCADPipeline.__call__",
            )
        },
    ),  # fmt: skip
    # Algorithm 1's edit of the cross-attention
    "lcad-attention": Module(
        "packages/lcad", "lcad", ("attention.py",), ("tests/lcad/test_attention.py",)
    ),
    "lcad-cec": Module("packages/lcad", "lcad", ("cec.py",), ("tests/lcad/test_cec.py",)),
    "core-color": Module(
        "shared",
        "chromalab",
        (
            "color.py",
            "metrics/accuracy.py",
            "metrics/cmf.py",
            "metrics/colorfulness.py",
            "metrics/perceptual.py",
            "metrics/caption.py",
            "metrics/__init__.py",
        ),
        (
            "tests/core/test_color.py",
            "tests/core/test_metrics.py",
            "tests/core/test_caption_metric.py",
        ),
    ),  # fmt: skip
    "core-hub": Module(
        "shared",
        "chromalab",
        ("hub.py",),
        ("tests/core/test_hub.py", "tests/lcoins/test_external_parts.py"),
    ),
    "core-readers": Module(
        "shared",
        "chromalab",
        ("inference.py", "data/folders.py", "data/records.py"),
        (
            "tests/core/test_inference.py",
            "tests/core/test_folders.py",
            "tests/core/test_records.py",
        ),
    ),  # fmt: skip
}

#: mutmut's verdicts (its ``status_by_exit_code``) counted as caught.
CAUGHT = {"killed", "timeout", "caught by type check", "segfault"}


PRAGMA = "# pragma: no mutate block"


def only_functions(path: Path, keep: tuple[str, ...]) -> None:
    """Mark every function of ``path`` but ``keep`` (and what they nest) not to be mutated."""
    import libcst as cst

    class Mark(cst.CSTTransformer):
        def __init__(self) -> None:
            self.scope: list[str] = []
            self.kept: set[str] = set()

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            self.scope.append(node.name.value)
            return True

        def leave_ClassDef(self, original, updated):
            self.scope.pop()
            return updated

        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            self.scope.append(node.name.value)
            return False  # nested functions go with their function

        def leave_FunctionDef(self, original, updated):
            name = ".".join(self.scope)
            self.scope.pop()
            if name in keep:
                self.kept.add(name)
                return _undecorated(updated)
            header = updated.body.header
            old = header.comment.value + "  " if header.comment else ""
            comment = cst.Comment(old + PRAGMA)
            gap = cst.SimpleWhitespace("  ")
            body = updated.body.with_changes(
                header=header.with_changes(whitespace=gap, comment=comment)
            )
            return updated.with_changes(body=body)

    mark = Mark()
    tree = cst.parse_module(path.read_text()).visit(mark)
    if missing := set(keep) - mark.kept:
        raise ValueError(f"{path}: no function {sorted(missing)}")
    path.write_text(tree.code)


def _undecorated(function):
    """``function`` without its decorators, applied after it instead (``f = d(f)``), the same
    function for its callers: mutmut 3 leaves a decorated function unmutated (``@classmethod`` and
    ``@staticmethod`` aside), e.g. a pipeline's ``@torch.no_grad() __call__``."""
    import libcst as cst

    decorators = [d.decorator for d in function.decorators]
    names = [d.value if isinstance(d, cst.Name) else None for d in decorators]
    if not decorators or set(names) & {"classmethod", "staticmethod"}:
        return function
    wrapped: cst.BaseExpression = function.name
    for decorator in reversed(decorators):
        wrapped = cst.Call(func=decorator, args=[cst.Arg(wrapped)])
    assign = cst.SimpleStatementLine(
        [cst.Assign([cst.AssignTarget(function.name)], wrapped)],
        trailing_whitespace=cst.TrailingWhitespace(
            whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment("# pragma: no mutate")
        ),
    )
    return cst.FlattenSentinel([function.with_changes(decorators=[]), assign])


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(name: str, module: Module) -> Path:
    """A fresh workspace for ``module``."""
    work = WORK / name
    if work.exists():
        shutil.rmtree(work)
    src = work / "src" / module.package
    shutil.copytree(ROOT / module.root / "src" / module.package, src,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    for name, keep in module.functions.items():
        only_functions(src / name, keep)
    mutate = [f"src/{module.package}/{f}" for f in module.files]
    config = (ROOT / "pyproject.toml").read_text() + (
        "\n[tool.mutmut]\n"
        f'source_paths = ["src/{module.package}"]\n'
        f"only_mutate = {_toml_list(mutate)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(list(module.tests))}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
    )
    (work / "pyproject.toml").write_text(config)
    return work


def verdicts(work: Path, module: Module) -> dict[str, str]:
    """Each mutant's verdict, from mutmut's ``.meta`` files."""
    from mutmut.stats import status_by_exit_code

    out = {}
    for f in module.files:
        meta = work / "mutants" / "src" / module.package / f"{f}.meta"
        if not meta.is_file():
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        out |= {key: status_by_exit_code[code] for key, code in codes.items()}
    return out


def sweep(name: str, module: Module, max_children: int) -> dict:
    work = prepare(name, module)
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    run = subprocess.run([str(MUTMUT), "run", "--max-children", str(max_children)], cwd=work,
                         env=env, capture_output=True, text=True)  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    (work / "mutmut-run.log").write_text(run.stdout + run.stderr)
    found = verdicts(work, module)
    caught = sum(v in CAUGHT for v in found.values())
    left = sorted(k for k, v in found.items() if v not in CAUGHT)
    statuses = {k: found[k] for k in left}
    return dict(module=name, mutants=len(found), caught=caught, minutes=minutes, left=left,
                statuses=statuses, returncode=run.returncode, work=work)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument("--max-children", type=int, default=1)
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {', '.join(MODULES)}")
    rows = []
    for name in args.modules or list(MODULES):
        print(f"== {name}", flush=True)
        row = sweep(name, MODULES[name], args.max_children)
        rows.append(row)
        if row["returncode"] != 0 or not row["mutants"]:
            print(f"   mutmut failed (exit {row['returncode']}): {row['work']}/mutmut-run.log")
        for key in row["left"]:
            print(f"   {row['statuses'][key]}: {key}")
        print(f"   {row['caught']}/{row['mutants']} caught in {row['minutes']:.1f} min", flush=True)
    print("\nmodule                mutants  caught  score  minutes")
    for r in rows:
        score = f"{100 * r['caught'] / r['mutants']:.0f}%" if r["mutants"] else "-"
        print(f"{r['module']:<20}  {r['mutants']:>7}  {r['caught']:>6}  {score:>5}  "
              f"{r['minutes']:>7.1f}")  # fmt: skip
    return int(any(r["returncode"] != 0 or not r["mutants"] for r in rows))


if __name__ == "__main__":
    sys.exit(main())
