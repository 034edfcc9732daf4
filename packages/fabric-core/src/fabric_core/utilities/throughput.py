"""How fast the loop runs: samples, tokens and FLOPs per second, and the model FLOPs utilisation (MFU).

`Throughput` turns running totals (elapsed time, batches, samples, tokens, FLOPs)
into rates over a window of the last updates. `ThroughputMonitor` is the same,
knowing the run from a ``Fabric`` (world size, device peak) and logging through
``fabric.log_dict``. `measure_flops` counts a model's FLOPs per step with
``torch.utils.flop_counter``, and `get_available_flops` looks up the device's peak.

Glossary: *device* values are this process's; *global* values are for the whole run,
the device value times the world size (no communication; see `Throughput`). MFU is
achieved FLOP/s divided by the device's peak FLOP/s for the compute dtype.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric

__all__ = ["Throughput", "ThroughputMonitor", "get_available_flops", "measure_flops"]

# Peak dense (no sparsity) FLOP/s per GPU from NVIDIA's datasheets, by a lower-case substring
# of torch.cuda.get_device_name(); the first matching entry wins, so the more specific
# names come first. "tf32" is float32 matmuls on tensor cores
# (torch.set_float32_matmul_precision("high")); a dtype a GPU lacks is left out (unknown).
_PEAK_FLOPS: dict[str, dict[str, float]] = {
    "h200 nvl": {"bf16": 835.5e12, "fp16": 835.5e12, "tf32": 417.5e12, "fp32": 60e12},
    "h200": {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "h100 nvl": {"bf16": 835.5e12, "fp16": 835.5e12, "tf32": 417.5e12, "fp32": 60e12},
    "h100 pcie": {"bf16": 756.5e12, "fp16": 756.5e12, "tf32": 378e12, "fp32": 51.2e12},
    "h100": {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "a100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "a10": {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},
    "l40s": {"bf16": 362.05e12, "fp16": 362.05e12, "tf32": 183e12, "fp32": 91.6e12},
    "l4": {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    "v100s": {"fp16": 130e12, "fp32": 16.4e12, "tf32": 16.4e12},
    "v100-pcie": {"fp16": 112e12, "fp32": 14e12, "tf32": 14e12},
    "v100": {"fp16": 125e12, "fp32": 15.7e12, "tf32": 15.7e12},
    "t4": {"fp16": 65e12, "fp32": 8.1e12, "tf32": 8.1e12},
}
_DTYPE_KEYS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def get_available_flops(device: torch.device | str, dtype: torch.dtype | str) -> float | None:
    """The peak FLOP/s of one ``device`` computing in ``dtype``, or ``None`` where unknown.

    Known: the NVIDIA GPUs of a small table (H200, H100, A100, A10, L40S, L4, V100, T4),
    matched by name (``torch.cuda.get_device_name``), with dense tensor-core peaks. For
    ``torch.float32``, the TF32 peak is used when ``torch.get_float32_matmul_precision()``
    is not ``"highest"``. Unknown, so ``None``: CPUs, MPS, XLA, other GPUs, and dtypes a
    GPU has no fast path for (``bfloat16`` on a V100, ``float64`` everywhere).

    Args:
        device: The device (``fabric.device``).
        dtype: The compute dtype: a ``torch.dtype`` or a precision name such as
            ``"bf16-mixed"``, ``"16-true"``, ``"32-true"``.
    """
    device = torch.device(device)
    key = _dtype_key(dtype)
    if device.type != "cuda" or key is None or not torch.cuda.is_available():
        return None
    if key == "fp32" and torch.get_float32_matmul_precision() != "highest":
        key = "tf32"
    return _peak_flops(torch.cuda.get_device_name(device), key)


def _peak_flops(device_name: str, key: str) -> float | None:
    """The table's peak for a GPU named ``device_name`` and a dtype key (``"bf16"``, ``"tf32"``, ...)."""
    name = device_name.lower()
    for pattern, peaks in _PEAK_FLOPS.items():
        if pattern in name:
            return peaks.get(key)
    return None


def _dtype_key(dtype: torch.dtype | str) -> str | None:
    if isinstance(dtype, torch.dtype):
        return _DTYPE_KEYS.get(dtype)
    text = str(dtype).lower()
    if text.startswith("bf16") or "bfloat16" in text:
        return "bf16"
    if text.startswith("16") or "float16" in text:
        return "fp16"
    if text.startswith("32") or text.endswith("float32"):
        return "fp32"
    return None


class Throughput:
    """Rates over a window of the last ``window_size`` updates of running totals.

    Call `update` after each step (or every few) with totals since the start:
    elapsed seconds, batches, samples and optionally items (``lengths``, e.g. tokens)
    and the FLOPs done since the previous update. `compute` returns:

    - ``time``, ``batches``, ``samples`` (and ``lengths``): the latest totals given;
    - ``device/batches_per_sec``, ``device/samples_per_sec``, ``device/items_per_sec``
      (with ``lengths``), ``device/flops_per_sec`` (with ``flops``), and ``device/mfu``
      (with ``flops`` and a known peak): this device's rates over the window;
    - the same without ``device/``: the whole run's, i.e. this device's rate times
      ``world_size`` (``mfu`` is then the same as ``device/mfu``).

    The global values assume every process does the same work at the same speed, which
    holds for data-parallel training with equal batches; they cost no communication and
    so can be computed on rank 0 alone. For exact totals across uneven processes,
    all-reduce the device values yourself (``fabric.all_reduce(value, reduce_op="sum")``
    on every rank). Rates need two updates in the window; until then only the totals are
    returned. Without a known peak (``available_flops=None``, e.g. on a CPU) there is no
    ``mfu`` key: MFU is unknown, not zero. Example::

        import time

        from fabric_core.utilities import Throughput

        throughput = Throughput(window_size=10)
        start = time.perf_counter()
        for step in range(1, 6):
            time.sleep(0.01)  # a training step on a batch of 8 samples of 128 tokens
            throughput.update(time=time.perf_counter() - start, batches=step, samples=8 * step,
                              lengths=8 * 128 * step)
        print(throughput.compute()["device/items_per_sec"])  # about 100 000

    Args:
        available_flops: Peak FLOP/s of one device (see `get_available_flops`), for
            MFU; ``None`` when unknown.
        world_size: The number of processes, for the global values.
        window_size: How many of the latest updates the rates are computed over (at least 2).
        separator: Joins ``device`` and the metric name.

    Raises:
        ValueError: ``window_size`` below 2, ``world_size`` below 1, or a non-positive
            ``available_flops``.
    """

    def __init__(
        self,
        available_flops: float | None = None,
        world_size: int = 1,
        window_size: int = 100,
        separator: str = "/",
    ) -> None:
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 2:
            raise ValueError(
                f"Throughput(window_size={window_size!r}): rates need at least 2 updates in the window; "
                "pass an integer >= 2 (default 100)."
            )
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"Throughput(world_size={world_size!r}) must be a positive integer.")
        if available_flops is not None and not available_flops > 0:
            raise ValueError(
                f"Throughput(available_flops={available_flops!r}) must be a positive peak FLOP/s, or None if unknown."
            )
        self.available_flops = available_flops
        self.world_size = world_size
        self.separator = separator
        self._time: deque[float] = deque(maxlen=window_size)
        self._batches: deque[int] = deque(maxlen=window_size)
        self._samples: deque[int] = deque(maxlen=window_size)
        self._lengths: deque[int] = deque(maxlen=window_size)
        self._flops: deque[float] = deque(maxlen=window_size)

    def update(
        self,
        *,
        time: float,
        batches: int,
        samples: int,
        lengths: int | None = None,
        flops: float | None = None,
    ) -> None:
        """Record the totals so far.

        Args:
            time: Seconds elapsed since the start (e.g. ``time.perf_counter() - start``).
            batches: Batches this process has processed since the start.
            samples: Samples this process has processed since the start.
            lengths: Items (e.g. tokens) this process has processed since the start; give it
                on every update or on none.
            flops: FLOPs this process did since the previous update (e.g.
                `measure_flops`' per-batch count times the batches since then); give
                it on every update or on none.

        Raises:
            ValueError: A total went down, ``samples < batches``, ``lengths < samples``, or
                ``lengths``/``flops`` given on some updates only.
        """
        if self._time:
            for label, optional, seen in (("lengths", lengths, self._lengths), ("flops", flops, self._flops)):
                if (optional is None) != (not seen):
                    raise ValueError(
                        f"Throughput.update({label}=...) was given on some updates only; pass it on every "
                        "update or on none (call reset() to start over)."
                    )
            totals: list[tuple[str, float, deque[Any]]] = [
                ("time", time, self._time),
                ("batches", batches, self._batches),
                ("samples", samples, self._samples),
            ]
            if lengths is not None:
                totals.append(("lengths", lengths, self._lengths))
            for label, value, history in totals:
                if value < history[-1]:
                    raise ValueError(
                        f"Throughput.update({label}={value!r}) went down from {history[-1]!r}: pass the total "
                        "since the start, not the amount since the last update."
                    )
        if samples < batches:
            raise ValueError(
                f"Throughput.update(samples={samples!r}, batches={batches!r}): samples is the total number "
                "of samples, at least one per batch."
            )
        if lengths is not None and lengths < samples:
            raise ValueError(
                f"Throughput.update(lengths={lengths!r}, samples={samples!r}): lengths is the total number "
                "of items (e.g. tokens), at least one per sample."
            )
        self._time.append(time)
        self._batches.append(batches)
        self._samples.append(samples)
        if lengths is not None:
            self._lengths.append(lengths)
        if flops is not None:
            self._flops.append(flops)

    def compute(self) -> dict[str, int | float]:
        """The latest totals and the rates over the window (see the class docstring for the keys)."""
        if not self._time:
            return {}
        metrics: dict[str, int | float] = {
            "time": self._time[-1],
            "batches": self._batches[-1],
            "samples": self._samples[-1],
        }
        if self._lengths:
            metrics["lengths"] = self._lengths[-1]
        elapsed = self._time[-1] - self._time[0]
        if len(self._time) < 2 or elapsed <= 0:
            return metrics
        rates = {
            "batches_per_sec": (self._batches[-1] - self._batches[0]) / elapsed,
            "samples_per_sec": (self._samples[-1] - self._samples[0]) / elapsed,
        }
        if self._lengths:
            rates["items_per_sec"] = (self._lengths[-1] - self._lengths[0]) / elapsed
        if self._flops:
            # Each update's flops were done since the previous update: the window's first
            # update's happened before the window started.
            rates["flops_per_sec"] = sum(list(self._flops)[1:]) / elapsed
        device = f"device{self.separator}"
        for name, rate in rates.items():
            metrics[device + name] = rate
            metrics[name] = rate * self.world_size
        if "flops_per_sec" in rates and self.available_flops is not None:
            metrics[device + "mfu"] = metrics["mfu"] = rates["flops_per_sec"] / self.available_flops
        return metrics

    def reset(self) -> None:
        """Forget every update."""
        for values in (self._time, self._batches, self._samples, self._lengths, self._flops):
            values.clear()


class ThroughputMonitor(Throughput):
    """`Throughput` for a ``Fabric`` run: world size and peak FLOP/s from it, logging through it.

    The peak is `get_available_flops` for ``fabric.device`` and the precision's
    compute dtype (``bf16-mixed`` computes in bfloat16); on a CPU it is unknown, so there
    is no MFU. Global rates are device rates times ``fabric.world_size`` (see
    `Throughput`). Example::

        import time

        from fabric_core import Fabric
        from fabric_core.loggers import CSVLogger
        from fabric_core.utilities import ThroughputMonitor

        fabric = Fabric(accelerator="cpu", devices=1, loggers=CSVLogger("logs"))
        monitor = ThroughputMonitor(fabric, window_size=50)
        start = time.perf_counter()
        for step in range(1, 11):
            time.sleep(0.01)  # a training step on a batch of 4 samples
            monitor.update(time=time.perf_counter() - start, batches=step, samples=4 * step)
            if step % 5 == 0:
                metrics = monitor.compute_and_log(step=step)  # fabric.log_dict on rank 0
        print(round(metrics["samples_per_sec"]))  # about 400

    Args:
        fabric: The run.
        window_size: How many of the latest updates the rates are computed over.
        separator: Joins ``device`` and the metric name.
        available_flops: The peak FLOP/s of one device, instead of looking it up.
    """

    def __init__(
        self,
        fabric: Fabric,
        window_size: int = 100,
        separator: str = "/",
        available_flops: float | None = None,
    ) -> None:
        if available_flops is None:
            precision = fabric.strategy.precision
            dtype = getattr(precision, "dtype", None)
            available_flops = get_available_flops(
                fabric.device,
                dtype if isinstance(dtype, torch.dtype) else getattr(precision, "precision", "32-true"),
            )
        super().__init__(
            available_flops=available_flops,
            world_size=fabric.world_size,
            window_size=window_size,
            separator=separator,
        )
        self._fabric = fabric
        self.step = -1

    def compute_and_log(self, step: int | None = None) -> dict[str, int | float]:
        """`compute`, logged with ``fabric.log_dict`` on global rank 0; returns the metrics on every rank.

        Args:
            step: The step to log at; ``None`` takes one more than the last.
        """
        self.step = self.step + 1 if step is None else step
        metrics = self.compute()
        if self._fabric.is_global_zero:
            self._fabric.log_dict(metrics, step=self.step)
        return metrics


def measure_flops(
    model: nn.Module,
    forward_fn: Callable[[], Any],
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
) -> int:
    """The FLOPs of one call of ``forward_fn`` (and of ``loss_fn(output).backward()`` when given).

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` (matrix multiplications,
    convolutions, attention: what dominates; element-wise operations count 0). Works on
    the meta device, where nothing is computed or allocated: build the model and inputs
    under ``torch.device("meta")`` to count a model too large for this machine. Example::

        import torch

        from fabric_core.utilities import measure_flops

        with torch.device("meta"):
            model = torch.nn.Linear(1024, 1024)
            batch = torch.randn(8, 1024)
        forward = measure_flops(model, lambda: model(batch))
        step = measure_flops(model, lambda: model(batch), lambda y: y.sum())
        print(forward, step)  # 16777216 33554432: the backward adds the weight gradients

    Args:
        model: The model ``forward_fn`` runs. Gradients the backward pass gives to its
            parameters that had none are removed again afterwards.
        forward_fn: Runs the forward pass, e.g. ``lambda: model(batch)``.
        loss_fn: Turns the output into the loss to back-propagate; ``None`` counts the
            forward pass only (for inference, or to multiply by 3 as an estimate).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"measure_flops(model, forward_fn, loss_fn) takes the model first, got {type(model).__name__}."
        )
    without_grad = [parameter for parameter in model.parameters() if parameter.grad is None]
    counter = FlopCounterMode(display=False)
    with counter:
        output = forward_fn()
        if loss_fn is not None:
            loss_fn(output).backward()
    for parameter in without_grad:
        parameter.grad = None
    return int(counter.get_total_flops())
