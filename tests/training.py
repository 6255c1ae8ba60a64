"""Helpers shared by the packages' tests: CLI training runs, the benchmark scripts, and the
exact-resume check (:func:`check_exact_resume`) that kills a run at random moments."""

from __future__ import annotations

import csv
import importlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_module(name: str) -> Iterator[ModuleType]:
    """Import ``benchmarks/<name>.py`` (the scripts import ``_common`` from their folder)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


#: 2 CPU processes under DDP (gloo).
DDP_ARGS = ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu"]
#: A launcher's variables (torchrun's): a DDP run's subprocess must not inherit them.
_LAUNCHER_VARIABLES = (
    "LOCAL_RANK",
    "NODE_RANK",
    "GLOBAL_RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def fit(run: Callable[[list[str]], Any], config: str, root: Path, *extra: str) -> Path:
    """Train with a package's CLI ``run`` and ``config`` under ``root``; the newest checkpoint."""
    run(["fit", "--config", config, "--trainer.default_root_dir", str(root), *extra])
    ckpts = sorted((root / "checkpoints").glob("*.ckpt"))
    assert ckpts, f"no checkpoint written under {root}"
    return ckpts[-1]


def run_ddp(
    command: Callable[..., list[str]], *args: str, cwd: Path
) -> subprocess.CompletedProcess:
    """Run a package CLI with ``args`` in 2 CPU processes under DDP; check both ranks joined."""
    # a launcher's variables in this process would make Lightning skip launching rank 1
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    proc = subprocess.run(
        command(*args, *DDP_ARGS), capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout
    return proc


def read_metrics(root: Path) -> dict[str, float]:
    """The last logged value of every metric of the CSV log under ``root``."""
    rows = list(csv.DictReader(next(root.rglob("metrics.csv")).open()))
    out: dict[str, float] = {}
    for row in rows:
        out.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return out


# ----------------------------------------------------------------------------- exact resume
#: Moments at which :func:`check_exact_resume` kills a run.
KILL_MOMENTS = ("between_steps", "after_checkpoint", "during_write")

#: Intra-op threads of the runs: two, so that races between threads (one made resumed runs drift,
#: see chromalab.bins._order_k_zones) can show; passive waiting keeps them fast on a busy machine
#: and does not change any result.
_THREADS = {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}


class KillSwitch(Callback):
    """SIGKILLs the run's process group at one moment of ``fit`` (used by
    :func:`check_exact_resume`, which starts the run in a session of its own).

    Moments: ``between_steps``: before the optimizer step ``step + 1`` (its batch drawn);
    ``after_checkpoint``: as soon as ``last.ckpt`` of step ``step`` is written;
    ``during_write``: ``fraction`` of the expected write time into the write of step ``step``'s
    ``target`` file (``"last"`` or ``"step"``, the top-k file), by a timer thread, as an outside
    SIGKILL would land (expected time: the shortest earlier write of this process, else 50 ms).
    Each kill is first appended as a JSON line to ``log_file``.
    """

    def __init__(
        self,
        moment: str,
        step: int,
        log_file: str,
        target: str = "last",
        fraction: float = 0.5,
    ) -> None:
        if moment not in KILL_MOMENTS:
            raise ValueError(f"moment must be one of {KILL_MOMENTS}, got {moment!r}")
        if target not in ("last", "step"):
            raise ValueError(f"target must be 'last' or 'step', got {target!r}")
        self.moment, self.step, self.log_file = moment, step, Path(log_file)
        self.target, self.fraction = target, fraction
        self._durations: list[float] = []

    def _record(self, **entry: Any) -> None:
        entry = {"moment": self.moment, "step": self.step, "pid": os.getpid(), **entry}
        with self.log_file.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    @staticmethod
    def _kill() -> None:
        os.killpg(os.getpgid(0), signal.SIGKILL)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if os.getpgid(0) != os.getsid(0):
            raise RuntimeError("KillSwitch kills its process group: start the run in a session")
        io = trainer.strategy.checkpoint_io
        original = io.save_checkpoint

        def save_checkpoint(checkpoint: dict, path: Any, storage_options: Any = None) -> None:
            self._save(original, checkpoint, Path(path), storage_options)

        io.save_checkpoint = save_checkpoint

    def _save(self, original: Callable, checkpoint: dict, path: Path, options: Any) -> None:
        step, is_last = checkpoint["global_step"], path.name.startswith("last")
        if (
            self.moment == "during_write"
            and step == self.step
            and is_last == (self.target == "last")
        ):
            expected = min(self._durations, default=0.05)
            delay = self.fraction * expected
            self._record(file=path.name, delay_s=round(delay, 4), expected_s=round(expected, 4))
            threading.Timer(delay, self._kill).start()
            original(checkpoint, path, options)
            self._record(file=path.name, note="the write ended before the kill")
            time.sleep(600)  # the timer kills this process
        start = time.perf_counter()
        original(checkpoint, path, options)
        self._durations.append(time.perf_counter() - start)
        if self.moment == "after_checkpoint" and step == self.step and is_last:
            self._record(file=path.name)
            self._kill()

    def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
        if self.moment == "between_steps" and trainer.global_step == self.step:
            self._record()
            self._kill()


@dataclass(frozen=True)
class PlannedKill:
    """One kill of :func:`check_exact_resume` (see :class:`KillSwitch`), and the loader workers
    of the run it kills."""

    moment: str
    step: int
    num_workers: int
    target: str = "last"
    fraction: float = 0.5


def plan_kills(rng: random.Random, count: int, every: int) -> tuple[list[PlannedKill], int]:
    """``count`` kills at random moments of a run checkpointed every ``every`` steps, and the
    run's length.

    The moments cycle through :data:`KILL_MOMENTS` (in a random order), at increasing steps, one
    in each of ``count`` consecutive windows of ``3 * every`` steps after the first checkpoint: a
    checkpoint moment at one of the window's checkpoint steps, ``between_steps`` at one of its
    other steps (so steps since the last checkpoint are lost). Workers alternate between 0 and 2
    from run to run (the first at random).
    """
    moments = [KILL_MOMENTS[i % len(KILL_MOMENTS)] for i in range(count)]
    rng.shuffle(moments)
    first_workers = rng.choice((0, 2))
    kills = []
    for i, moment in enumerate(moments):
        window = range(every * (3 * i + 1) + 1, every * (3 * i + 4))
        if moment == "between_steps":
            step = rng.choice([s for s in window if s % every])
        else:
            step = rng.choice([s for s in window if not s % every])
        workers = 2 if (i % 2 == 0) == (first_workers == 2) else 0
        target = rng.choice(("last", "step"))
        kills.append(PlannedKill(moment, step, workers, target, round(rng.random(), 3)))
    return kills, every * (3 * count + 2)


#: Checkpoint entries of Lightning itself: compared selectively, or not at all (the progress
#: counters of a resumed loop, the callbacks' records of files, the library version).
_LIGHTNING_KEYS = {
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "state_dict",
    "loops",
    "callbacks",
    "optimizer_states",
    "lr_schedulers",
    "hparams_name",
    "hyper_parameters",
    "datamodule_hparams_name",
    "datamodule_hyper_parameters",
}


def _training_state_differences(reference: dict, resumed: dict) -> dict[str, float]:
    """Largest absolute difference of every tensor of the two checkpoints' weights, buffers,
    optimizer and scheduler states (keys missing on one side count as ``inf``)."""
    out: dict[str, float] = {}

    def visit(name: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in set(a) | set(b):
                if key not in a or key not in b:
                    out[f"{name}.{key}"] = float("inf")
                else:
                    visit(f"{name}.{key}", a[key], b[key])
        elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
            if len(a) != len(b):
                out[name] = float("inf")
                return
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                visit(f"{name}[{i}]", x, y)
        elif isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if a.shape != b.shape:
                out[name] = float("inf")
            elif a.numel():
                out[name] = (a.double() - b.double()).abs().max().item()
        elif isinstance(a, int | float) and isinstance(b, int | float):
            out[name] = abs(float(a) - float(b))
        elif a != b:
            out[name] = float("inf")

    for key in ("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch"):
        visit(key, reference.get(key), resumed.get(key))
    # what the module, the datamodule and callbacks add (e.g. a vocabulary), by key
    for key in set(reference) - _LIGHTNING_KEYS:
        visit(key, reference[key], resumed.get(key))
    # the training loader's place in its epoch
    loader = [
        c["loops"]["fit_loop"]["state_dict"].get("combined_loader") for c in (reference, resumed)
    ]
    visit("combined_loader", *loader)
    return out


@dataclass
class ResumeCheck:
    """What :func:`check_exact_resume` did: its seed, the kills (each with the step
    ``last.ckpt`` held after it), the final checkpoint and the largest difference to the
    uninterrupted run."""

    seed: int
    kills: list[dict[str, Any]]
    final: dict[str, Any]
    max_difference: float
    seconds: float

    def __str__(self) -> str:
        lines = [f"exact-resume check, seed {self.seed} ({self.seconds:.0f} s):"]
        lines += [f"  {kill}" for kill in self.kills]
        lines.append(f"  largest difference to the uninterrupted run: {self.max_difference:.3g}")
        return "\n".join(lines)


def check_exact_resume(
    command: Callable[..., list[str]],
    tiny_config: str,
    tmp_path: Path,
    kills: int = 3,
    every: int = 3,
    ddp: bool = False,
    seed: int | None = None,
    atol: float = 0.0,
) -> ResumeCheck:
    """Kill a ``fit`` at random moments, resume it each time with ``--ckpt_path last``, and check
    that it ends exactly where an uninterrupted run ends.

    The run trains on CapShapes with a checkpoint (top-1 and ``last.ckpt``) every ``every``
    steps, over several epochs (whose ends fall on some checkpoints). The kills are those of
    :func:`plan_kills`, drawn from ``seed`` (default: ``$CHROMALAB_RESUME_SEED``, else random),
    which is printed with them so that a failure can be replayed. Each kill SIGKILLs the whole
    run (every DDP rank and loader worker) at its moment, and ``last.ckpt`` must then be a whole
    checkpoint. At the end every weight, buffer, optimizer and scheduler tensor, the step, the
    epoch, the loader's position and what the module adds to checkpoints must equal the
    uninterrupted run's within ``atol``.

    Args:
        command: maps CLI arguments to the command line of the package's CLI.
        tiny_config: the package's tiny config.
        tmp_path: working folder.
        kills: number of kills (each moment of :data:`KILL_MOMENTS` once per three).
        every: checkpoint interval in steps.
        ddp: run in 2 CPU processes under DDP (one thread each) instead of one process.
        seed: seed of the kill plan.
        atol: tolerance of the comparison; by default none (bitwise equal): the thread race
            that made resumes drift (chromalab.bins._order_k_zones) moved a 24-step tiny run
            by 8.2e-7 to 2.4e-4, so 1e-6 would let it pass now and then.

    Returns:
        The :class:`ResumeCheck` (also printed).
    """
    began = time.perf_counter()
    if seed is None:
        seed = int(os.environ.get("CHROMALAB_RESUME_SEED", random.SystemRandom().randrange(2**31)))
    plan, steps = plan_kills(random.Random(seed), kills, every)
    print(f"exact-resume check, seed {seed}: {steps} steps, kills {plan}", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    env.update(_THREADS)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    if ddp:
        env["OMP_NUM_THREADS"] = "1"  # one per rank on a 2-core machine
    env["TMPDIR"] = str(tmp_path / "tmp")  # what killed processes leave (loader workers' folders)
    (tmp_path / "tmp").mkdir(exist_ok=True)

    def launch(folder: Path, workers: int, kill: PlannedKill | None, resume: bool) -> int:
        folder.mkdir(exist_ok=True)
        callbacks = [
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {
                    "dirpath": str(folder / "ckpts"),
                    "save_last": True,
                    "every_n_train_steps": every,
                },
            }
        ]
        if kill is not None:
            init = {
                "moment": kill.moment,
                "step": kill.step,
                "log_file": str(folder / "kills.jsonl"),
            }
            init.update({"target": kill.target, "fraction": kill.fraction})
            callbacks.append({"class_path": "tests.training.KillSwitch", "init_args": init})
        config = folder / "resume.yaml"
        trainer = {"max_steps": steps, "limit_val_batches": 0, "callbacks": callbacks}
        config.write_text(json.dumps({"trainer": trainer}))  # YAML reads JSON
        args = ["fit", "--config", tiny_config, "--config", str(config)]
        args += ["--trainer.default_root_dir", str(folder)]
        args += ["--data.capshapes_train_length", "36", f"--data.num_workers={workers}"]
        if ddp:
            args += DDP_ARGS
        if resume:
            args += ["--ckpt_path", "last"]
        with (folder / "log.txt").open("a") as log:
            proc = subprocess.Popen(
                command(*args),
                cwd=folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the KillSwitch kills this session's process group
            )
            try:
                return proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise

    def log_tail(folder: Path) -> str:
        return (folder / "log.txt").read_text()[-3000:]

    reference = tmp_path / "reference"
    code = launch(reference, 0, None, resume=False)
    assert code == 0, log_tail(reference)
    run = tmp_path / "killed"
    done: list[dict[str, Any]] = []
    for i, kill in enumerate(plan):
        code = launch(run, kill.num_workers, kill, resume=i > 0)
        assert code == -signal.SIGKILL, f"seed {seed}, {kill}: exit {code}\n{log_tail(run)}"
        entries = [json.loads(line) for line in (run / "kills.jsonl").read_text().splitlines()]
        assert entries and entries[-1]["step"] == kill.step, f"seed {seed}: {kill} did not fire"
        last = run / "ckpts" / "last.ckpt"
        held = torch.load(last, weights_only=False)["global_step"] if last.exists() else None
        done.append({**asdict(kill), "log": entries[-1], "last.ckpt step": held})
        print(f"  killed: {done[-1]}", flush=True)
    workers = 2 if plan[-1].num_workers == 0 else 0
    code = launch(run, workers, None, resume=True)
    assert code == 0, f"seed {seed}: the last resume failed\n{log_tail(run)}"
    assert "Restoring states from the checkpoint" in log_tail(run)
    expected = torch.load(reference / "ckpts" / "last.ckpt", weights_only=False)
    final = torch.load(run / "ckpts" / "last.ckpt", weights_only=False)
    differences = _training_state_differences(expected, final)
    worst = sorted(differences.items(), key=lambda item: -item[1])[:5]
    check = ResumeCheck(seed, done, final, worst[0][1] if worst else 0.0, 0.0)
    check.seconds = time.perf_counter() - began
    print(check, flush=True)
    assert final["global_step"] == steps, check
    assert check.max_difference <= atol, f"{check}\n  largest differences: {worst}"
    return check
