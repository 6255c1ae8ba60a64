"""Helpers shared by the packages' tests: CLI training runs and the benchmark scripts."""

from __future__ import annotations

import csv
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_module(name: str) -> Iterator[ModuleType]:
    """Import ``benchmarks/<name>.py`` (the scripts import ``_common`` from their folder)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


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
    ddp = ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu"]
    # a launcher's variables in this process would make Lightning skip launching rank 1
    launched = {
        "LOCAL_RANK",
        "NODE_RANK",
        "GLOBAL_RANK",
        "WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    }
    env = {k: v for k, v in os.environ.items() if k not in launched}
    proc = subprocess.run(
        command(*args, *ddp), capture_output=True, text=True, timeout=300, cwd=cwd, env=env
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


def kill_and_resume(
    command: Callable[..., list[str]], tiny_config: str, tmp_path: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """SIGKILL a ``fit`` once it has checkpointed step 4, resume it from ``last`` for 3 more
    steps, and check that the step counter, the learning-rate schedule, Adam's state and the
    training loader's position in the epoch went on from the killed run.

    Args:
        command: maps CLI arguments to the command line of the package's CLI.
        tiny_config: the package's tiny config.
        tmp_path: working folder.

    Returns:
        The checkpoint the killed run left and the resumed run's final one.
    """
    config = tmp_path / "resume.yaml"
    ckpt_dir = tmp_path / "ckpts"
    config.write_text(
        "trainer:\n"
        "  max_steps: 10000\n"
        "  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args:\n"
        f"        dirpath: {ckpt_dir}\n"
        "        save_last: true\n"
        "        every_n_train_steps: 1\n"
    )
    args = ["fit", "--config", tiny_config, "--config", str(config)]
    args += ["--trainer.default_root_dir", str(tmp_path)]
    args += ["--data.capshapes_train_length", "100000"]
    proc = subprocess.Popen(
        command(*args), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    last = ckpt_dir / "last.ckpt"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if last.exists():
                try:
                    step = torch.load(last, weights_only=False)["global_step"]
                except Exception:  # being written
                    step = 0
                if step >= 4:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("training never reached step 4")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed = torch.load(last, weights_only=False)
    target = killed["global_step"] + 3
    result = subprocess.run(
        command(*args, "--ckpt_path", "last", "--trainer.max_steps", str(target)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Restoring states from the checkpoint" in result.stderr + result.stdout
    final = torch.load(last, weights_only=False)
    assert final["global_step"] == target  # counted on from the killed run
    assert final["lr_schedulers"][0]["last_epoch"] == target  # the scheduler kept stepping
    adam = final["optimizer_states"][0]["state"]
    assert adam and all(int(s["step"]) == target for s in adam.values())
    # the training loader went on from its position in the epoch, not from its start
    [before] = killed["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    [after] = final["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert after == {"epoch": before["epoch"], "batches": before["batches"] + 3}
    return killed, final
