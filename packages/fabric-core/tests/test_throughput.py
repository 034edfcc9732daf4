"""Throughput, ThroughputMonitor, measure_flops and the peak-FLOPs table."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fabric_core import Fabric
from fabric_core.utilities import Throughput, ThroughputMonitor, measure_flops
from fabric_core.utilities.throughput import _peak_flops, get_available_flops


class RecordingLogger:
    def __init__(self) -> None:
        self.logged: list[tuple[dict[str, Any], int | None]] = []

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.logged.append((metrics, step))


def feed(throughput: Throughput, updates: int, seconds: float = 0.5, **per_update: float) -> None:
    """``updates`` updates, each ``seconds`` apart; totals grow by 1 batch of 4 samples of 10 items."""
    for index in range(updates):
        throughput.update(
            time=index * seconds, batches=index, samples=4 * index, lengths=40 * index, **per_update
        )


def test_rates_over_the_window_per_device_and_for_the_world() -> None:
    throughput = Throughput(available_flops=1000.0, world_size=2)
    feed(throughput, 5, flops=100.0)  # 4 intervals of 0.5 s

    metrics = throughput.compute()

    assert metrics["time"] == 2.0 and metrics["batches"] == 4 and metrics["samples"] == 16
    assert metrics["lengths"] == 160
    assert metrics["device/batches_per_sec"] == 2.0 and metrics["batches_per_sec"] == 4.0
    assert metrics["device/samples_per_sec"] == 8.0 and metrics["samples_per_sec"] == 16.0
    assert metrics["device/items_per_sec"] == 80.0 and metrics["items_per_sec"] == 160.0
    # The first update's flops were done before the window started: 4 x 100 over 2 s.
    assert metrics["device/flops_per_sec"] == 200.0 and metrics["flops_per_sec"] == 400.0
    assert metrics["device/mfu"] == metrics["mfu"] == pytest.approx(0.2)


def test_only_the_last_window_size_updates_count() -> None:
    throughput = Throughput(window_size=3, separator=".")
    for index, now in enumerate([0.0, 10.0, 11.0, 12.0]):  # a slow first step, then 1 s per batch
        throughput.update(time=now, batches=index, samples=index)

    metrics = throughput.compute()

    assert metrics["device.batches_per_sec"] == 1.0
    assert "items_per_sec" not in metrics and "flops_per_sec" not in metrics
    assert "mfu" not in metrics and "device.mfu" not in metrics  # no peak: MFU unknown, not 0


def test_rates_need_two_updates_and_reset_forgets() -> None:
    throughput = Throughput()
    assert throughput.compute() == {}
    throughput.update(time=1.0, batches=1, samples=2)
    assert throughput.compute() == {"time": 1.0, "batches": 1, "samples": 2}
    throughput.reset()
    assert throughput.compute() == {}


def test_bad_updates_and_arguments_get_one_clear_error() -> None:
    throughput = Throughput()
    throughput.update(time=1.0, batches=2, samples=8, lengths=80)
    with pytest.raises(ValueError, match=r"update\(time=0.5\) went down from 1.0: pass the total"):
        throughput.update(time=0.5, batches=3, samples=12, lengths=120)
    with pytest.raises(ValueError, match=r"update\(lengths=10\) went down"):
        throughput.update(time=2.0, batches=3, samples=10, lengths=10)
    with pytest.raises(ValueError, match=r"lengths=\.\.\.\) was given on some updates only"):
        throughput.update(time=2.0, batches=3, samples=12)
    with pytest.raises(ValueError, match=r"flops=\.\.\.\) was given on some updates only"):
        throughput.update(time=2.0, batches=3, samples=12, lengths=120, flops=5.0)
    with pytest.raises(ValueError, match="at least one per batch"):
        Throughput().update(time=0.0, batches=2, samples=1)
    with pytest.raises(ValueError, match="at least one per sample"):
        Throughput().update(time=0.0, batches=1, samples=2, lengths=1)
    with pytest.raises(ValueError, match="window_size=1"):
        Throughput(window_size=1)
    with pytest.raises(ValueError, match="world_size=0"):
        Throughput(world_size=0)
    with pytest.raises(ValueError, match="available_flops=0"):
        Throughput(available_flops=0)


def test_monitor_logs_through_fabric_with_counting_steps() -> None:
    logger = RecordingLogger()
    fabric = Fabric(accelerator="cpu", precision="bf16-mixed", loggers=logger)
    monitor = ThroughputMonitor(fabric, window_size=10)
    feed(monitor, 3)

    first = monitor.compute_and_log()
    second = monitor.compute_and_log()
    monitor.compute_and_log(step=10)

    assert [step for _, step in logger.logged] == [0, 1, 10]
    assert logger.logged[0][0] == first == second
    assert first["samples_per_sec"] == first["device/samples_per_sec"] == 8.0  # world size 1
    assert monitor.available_flops is None and "mfu" not in first  # a CPU's peak is unknown


def test_monitor_takes_a_given_peak() -> None:
    monitor = ThroughputMonitor(Fabric(accelerator="cpu"), available_flops=800.0)
    feed(monitor, 3, flops=200.0)

    assert monitor.compute()["mfu"] == pytest.approx(0.5)


def test_peak_flops_of_known_gpus_and_unknown_devices() -> None:
    assert _peak_flops("NVIDIA H200", "bf16") == 989.4e12
    assert _peak_flops("NVIDIA H100 PCIe", "fp32") == 51.2e12
    assert _peak_flops("NVIDIA H100 80GB HBM3", "tf32") == 494.7e12
    assert _peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert _peak_flops("NVIDIA A10", "bf16") == 125e12  # not taken for an A100, nor the reverse
    assert _peak_flops("NVIDIA L4", "bf16") == 121e12
    assert _peak_flops("NVIDIA L40S", "bf16") == 362.05e12
    assert _peak_flops("Tesla V100-SXM2-16GB", "fp16") == 125e12
    assert _peak_flops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 tensor cores
    assert _peak_flops("Some Future GPU", "bf16") is None
    assert get_available_flops(torch.device("cpu"), torch.bfloat16) is None
    assert get_available_flops("cpu", "32-true") is None


def test_measure_flops_counts_forward_and_backward_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
        batch = torch.randn(16, 64)
    forward_flops = 2 * 16 * (64 * 32 + 32 * 8)

    assert measure_flops(model, lambda: model(batch)) == forward_flops
    # Backward: weight gradients of both layers, and the hidden activation's gradient.
    step_flops = measure_flops(model, lambda: model(batch), lambda output: output.sum())
    assert step_flops == forward_flops + forward_flops + 2 * 16 * 32 * 8
    assert all(parameter.grad is None for parameter in model.parameters())
    with pytest.raises(TypeError, match="takes the model first"):
        measure_flops(lambda: None, model)  # type: ignore[arg-type]
