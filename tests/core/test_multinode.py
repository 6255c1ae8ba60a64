"""Two nodes of one process each, simulated on localhost: ``torchrun --nnodes 2 --node-rank R``
launched twice (gloo), each running ``cic fit`` / ``cic validate`` with
``--trainer.num_nodes 2``. The ranks train on disjoint shares of the data, and the synced
validation metrics equal a single process's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cic.components import TINY_CONFIG
from tests.ddp import (
    assert_partition,
    assert_summed_states,
    importable_env,
    logged_args,
    read_ranks,
    recorder_args,
)
from tests.training import read_metrics

TRAIN_SCENES, VAL_SCENES = 16, 8  # tiny.yaml
_LAUNCHED = ("LOCAL_RANK", "NODE_RANK", "GLOBAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR",
             "MASTER_PORT")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(*args: str, cwd: Path) -> None:
    """``cic ARGS`` on 2 simulated nodes: two torchrun launchers on one rendezvous."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHED}
    env |= {"OMP_NUM_THREADS": "1"}
    nodes = ["--trainer.num_nodes=2", "--trainer.devices=1", "--trainer.strategy=ddp",
             "--trainer.accelerator=cpu"]  # fmt: skip
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={rank}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "-m",
                "cic.cli",
                *args,
                *nodes,
            ],  # fmt: skip
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for rank, (proc, out) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"node {rank}:\n{out[-3000:]}"


def test_two_nodes_split_the_data_and_sync_their_metrics(tmp_path, monkeypatch):
    importable_env(monkeypatch)
    train = tmp_path / "train"
    two_nodes("fit", "--config", TINY_CONFIG, f"--trainer.default_root_dir={train}",
              *recorder_args(train / "samples"), cwd=tmp_path)  # fmt: skip
    ranks = read_ranks(train / "samples", 2)
    assert_partition([r["train"] for r in ranks], range(TRAIN_SCENES))
    ckpt = sorted((train / "checkpoints").glob("*.ckpt"))[-1]

    common = ["validate", "--config", TINY_CONFIG, "--ckpt_path", str(ckpt)]
    single, nodes = tmp_path / "single", tmp_path / "nodes"
    subprocess.run([sys.executable, "-m", "cic.cli", *common, *logged_args(single),
                    *recorder_args(single / "samples")], cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    two_nodes(*common, *logged_args(nodes), *recorder_args(nodes / "samples"), cwd=tmp_path)
    [one] = read_ranks(single / "samples", 1)
    two = read_ranks(nodes / "samples", 2)
    assert_partition([r["val"] for r in two], range(VAL_SCENES))
    assert_summed_states(two, one)
    logged_one, logged_two = read_metrics(single), read_metrics(nodes)
    for key in ("val/auc_cmf", "val/auc_cmf_rebalanced", "val/colorfulness"):
        assert logged_two[key] == pytest.approx(logged_one[key], abs=1e-5), key
