"""Smoke test of ``benchmarks/cic_speed.py`` on a tiny network: rows, FLOP counts, report.

No timing is asserted (speed is measured by the benchmark, never asserted in tests): only the
shape of the results, finite positive values, and the FLOP counts against a hand count.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.training import benchmark_module

CPU = torch.device("cpu")
WIDTH, SIZE = 0.125, 32
KEYS = [
    "size",
    "variant",
    "train images/s",
    "train GFLOP/s",
    "train % of peak",
    "inference ms/image",
    "inference GFLOP/s",
    "inference % of peak",
    "loss rel. change",
    "mean abs ab change",
]
POSITIVE = KEYS[2:8]


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("cic_speed") as module:
        yield module


@pytest.fixture(scope="module")
def results(bench):
    return bench.run_benchmark(CPU, WIDTH, [SIZE], batch=1, repeats=1, matmul_n=32)


def _conv_flops_by_hand(network: nn.Module, l: torch.Tensor) -> tuple[float, float]:
    """(all convolutions, first convolution) FLOPs per image: 2 per multiply-add, no bias."""
    counts: list[float] = []

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        kh, kw = layer.kernel_size
        if isinstance(layer, nn.ConvTranspose2d):  # every input pixel feeds c_out * k * k
            x = inputs[0]
            counts.append(2.0 * x.shape[1] * layer.out_channels * kh * kw * x[0, 0].numel())
        else:  # every output pixel reads c_in * k * k
            c_in = layer.in_channels // layer.groups
            counts.append(2.0 * c_in * kh * kw * output[0].numel())

    handles = [
        m.register_forward_hook(hook)
        for m in network.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
    ]
    with torch.no_grad():
        network(l)
    for h in handles:
        h.remove()
    return sum(counts), counts[0]


def test_rows_have_keys_and_finite_positive_values(bench, results):
    rows, peaks, flops = results
    assert [r["variant"] for r in rows] == [v.name for v in bench.VARIANTS]
    for row in rows:
        assert list(row) == KEYS
        assert row["size"] == SIZE
        for key in POSITIVE:
            assert math.isfinite(row[key]) and row[key] > 0, (row["variant"], key, row[key])
        for key in ("loss rel. change", "mean abs ab change"):
            assert math.isfinite(row[key]) and row[key] >= 0
    assert all(math.isfinite(p) and p > 0 for p in peaks.values()) and set(peaks) == {
        "fp32",
        "bf16",
    }
    # throughput and FLOP rate agree: GFLOP/s = FLOPs/image * images/s
    infer_flops, train_flops = flops[SIZE]
    for row in rows:
        assert row["train GFLOP/s"] == pytest.approx(train_flops * row["train images/s"] / 1e9)
        assert row["inference GFLOP/s"] == pytest.approx(
            infer_flops / (row["inference ms/image"] / 1e3) / 1e9
        )
        peak = peaks["bf16" if "bf16" in row["variant"] else "fp32"]
        assert row["train % of peak"] == pytest.approx(100 * row["train GFLOP/s"] / peak)


def test_numerics_columns(results):
    rows = {r["variant"]: r for r in results[0]}
    assert rows["fp32"]["loss rel. change"] == 0 and rows["fp32"]["mean abs ab change"] == 0
    # channels_last is a memory layout only: float32 rounding at most
    assert rows["fp32 channels_last"]["loss rel. change"] < 1e-4
    assert rows["fp32 channels_last"]["mean abs ab change"] < 1e-2
    # bf16 does round: a nonzero change is expected, but not a different model
    assert rows["bf16 autocast"]["loss rel. change"] < 5e-2


def test_flop_counts_match_a_hand_count(bench):
    module = bench.build_module(WIDTH, False, CPU)
    batch = bench.synthetic_batch(2, SIZE, CPU)
    inference, training = bench.count_flops(module, batch)
    convs, first = _conv_flops_by_hand(module.network, batch["l"][:1])
    q, out = module.bins.num_bins, (SIZE // 4) ** 2
    # annealed mean (Eq. 8): a (Q -> 2) contraction per output pixel
    assert inference == pytest.approx(convs + 2 * q * 2 * out)
    # backward = weight gradients of every conv + input gradients of all but the first
    # (the input lightness needs none): 3x forward minus the first conv
    assert training == pytest.approx(3 * convs - first)


def test_best_variant_is_the_highest_geometric_mean_speedup(bench):
    def row(size, name, images_per_s, ms):
        return {"size": size, "variant": name, "train images/s": images_per_s,
                "inference ms/image": ms}  # fmt: skip

    rows = [
        row(176, "a", 1.0, 10.0),
        row(176, "b", 2.0, 10.0),  # 2x train, 1x inference
        row(176, "c", 4.0, 40.0),  # 4x train, 1/4 inference
        row(256, "a", 1.0, 10.0),
        row(256, "b", 2.0, 5.0),  # 2x, 2x
        row(256, "c", 1.0, 10.0),
    ]
    name, speedup = bench.best_variant(rows)
    assert name == "b"
    assert speedup == pytest.approx((2 * 1 * 2 * 2) ** 0.25)


def test_main_writes_a_report(bench, monkeypatch):
    written = {}
    monkeypatch.setattr(
        bench, "write_results", lambda name, rows, md: written.update(name=name, rows=rows, md=md)
    )
    argv = ["--device", "cpu", "--width", str(WIDTH), "--sizes", str(SIZE)]
    bench.main(argv + ["--batch", "1", "--repeats", "1", "--matmul-n", "32"])
    assert written["name"] == "cic_speed" and len(written["rows"]) == len(bench.VARIANTS)
    md = written["md"]
    for text in ("Machine:", "Matmul peaks", "## Best configuration", "## Conclusion", "| 32 |"):
        assert text in md
    best, _ = bench.best_variant(written["rows"])
    assert f"**{best}**" in md
