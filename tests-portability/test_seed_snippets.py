"""Every usage snippet of the seed (the specification), run as written where this CPU machine can.

Where a snippet needs hardware this machine lacks (CUDA for ``dp`` and ``nccl``, a TPU for
``xla``), ``Fabric(...)`` must fail with one message that names the missing hardware and
the CPU alternative; the CPU alternative then runs for real on 2 processes (the DDP
snippet's in fabric-ddp's own tests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fabric_core import Fabric
from fabric_core.registry import UnknownNameError
from fabric_core.strategies import STRATEGY_REGISTRY, SingleDeviceStrategy, Strategy
from fabric_core.testing.processes import run_process

SCRIPT = Path(__file__).parent / "scripts" / "seed_snippets.py"
LAUNCH_TIMEOUT_S = 240


def run_snippet(name: str, out_dir: Path) -> dict[str, Any]:
    """Run one snippet of ``scripts/seed_snippets.py`` on 2 processes; rank 0's record."""
    result = run_process(
        [sys.executable, str(SCRIPT), name, str(out_dir)],
        timeout=LAUNCH_TIMEOUT_S,
        env={**os.environ, "DS_ACCELERATOR": "cpu"},
    )
    output = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, f"{name}: exit {result.returncode}\n{output}"
    record: dict[str, Any] = json.loads((out_dir / f"{name}.json").read_text())
    return record


def single_error(exception: type[BaseException] | tuple[type[BaseException], ...], **kwargs: Any) -> str:
    """``Fabric(**kwargs)`` raises one error (no chained traceback); its message."""
    with pytest.raises(exception) as excinfo:
        Fabric(**kwargs)
    error = excinfo.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__), repr(error)
    return str(error)


# -- Fabric(strategy=...) by name ------------------------------------------------------------


def test_auto_selects_one_device() -> None:
    fabric = Fabric(strategy="auto")

    assert isinstance(fabric.strategy, SingleDeviceStrategy)
    assert fabric.world_size == 1


def test_dp_without_cuda_names_the_missing_hardware_and_the_cpu_alternative() -> None:
    message = single_error(ValueError, strategy="dp", devices=4)

    assert "needs cuda devices" in message and "strategy='ddp' and devices=N" in message


def test_ddp_on_two_nodes_is_configured_and_says_whom_it_waits_for(tmp_path: Path) -> None:
    fabric = Fabric(strategy="ddp", devices=4, num_nodes=2)
    assert (fabric.strategy.num_processes, fabric.strategy.num_nodes) == (4, 2)

    # Launching node 0 alone waits for node 1: it must say so, and where, instead of hanging silently.
    script = tmp_path / "two_nodes.py"
    script.write_text(
        textwrap.dedent(
            """
            from fabric_core import Fabric
            fabric = Fabric(accelerator="cpu", strategy="ddp", devices=1, num_nodes=2)
            fabric.launch()
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MASTER_PORT": "29671"},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        line = ""
        assert process.stderr is not None
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if "waits for" in line or not line:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert "node 0 of 2 waits for node(s) 1 at 127.0.0.1:29671" in line, line


def test_deepspeed_with_16_mixed_on_a_cpu_runs_as_bf16_mixed() -> None:
    with pytest.warns(UserWarning, match=r"runs as precision='bf16-mixed'"):
        fabric = Fabric(strategy="deepspeed", devices=8, precision="16-mixed")

    assert type(fabric.strategy).__name__ == "DeepSpeedStrategy"
    assert fabric.strategy.precision.precision == "bf16-mixed"
    assert fabric.strategy.config["zero_optimization"]["stage"] == 2


def test_fsdp_by_name_with_bf16_mixed() -> None:
    fabric = Fabric(strategy="fsdp", devices=4, precision="bf16-mixed")

    assert type(fabric.strategy).__name__ == "FSDPStrategy"
    assert fabric.strategy.precision.precision == "bf16-mixed"


def test_the_bare_transformer_wrap_policy_gets_one_message_naming_the_fix() -> None:
    from torch.distributed.fsdp import MixedPrecision
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from fabric_fsdp import FSDPStrategy

    with pytest.raises((TypeError, ValueError)) as excinfo:
        fsdp_strategy = FSDPStrategy(
            cpu_offload=True,
            mixed_precision=MixedPrecision(
                param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16, buffer_dtype=torch.bfloat16
            ),
            auto_wrap_policy=transformer_auto_wrap_policy,
            activation_checkpointing=True,
        )
        Fabric(strategy=fsdp_strategy, devices=8)

    assert "transformer_layer_cls" in str(excinfo.value) and "partial" in str(excinfo.value)


def test_xla_without_fabric_xla_names_the_distribution() -> None:
    message = single_error((UnknownNameError, RuntimeError), accelerator="tpu", strategy="xla", devices=8)

    assert "pip install fabric-xla" in message


def test_ddp_with_nccl_on_a_cpu_names_gloo() -> None:
    from fabric_ddp import DDPStrategy

    ddp_strategy = DDPStrategy(
        process_group_backend="nccl",
        timeout=timedelta(minutes=30),
        find_unused_parameters=False,
        gradient_as_bucket_view=True,
    )
    message = single_error(ValueError, strategy=ddp_strategy, devices=4, num_nodes=2)

    assert "needs NVIDIA GPUs" in message and "process_group_backend='gloo'" in message


# -- the custom strategy and the registry ---------------------------------------------------


def test_the_custom_strategy_registers_and_trains() -> None:
    class CustomStrategy(Strategy):
        def setup_module(self, module: nn.Module) -> nn.Module:
            return module

        def reduce(self, tensor: Any, *args: Any, **kwargs: Any) -> Any:
            return tensor

    STRATEGY_REGISTRY.register("custom", CustomStrategy)
    try:
        fabric = Fabric(strategy="custom")
        model = nn.Linear(2, 1)
        model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
        before = model.weight.detach().clone()
        fabric.backward(model(torch.ones(3, 2)).sum())
        optimizer.step()
        assert not torch.equal(before, model.weight)
        assert "custom" in STRATEGY_REGISTRY.available_strategies()
    finally:
        STRATEGY_REGISTRY.remove("custom")


def test_a_name_a_plugin_provides_is_not_taken_over_by_a_direct_registration() -> None:
    code = textwrap.dedent(
        """
        from fabric_core.registry import DuplicateNameError
        from fabric_core.strategies import STRATEGY_REGISTRY, SingleDeviceStrategy

        class Mine(SingleDeviceStrategy):
            pass

        try:
            STRATEGY_REGISTRY.register("ddp", Mine)  # before any lookup: plugins are discovered first
        except DuplicateNameError as error:
            print("refused:", error)
        assert STRATEGY_REGISTRY.get("ddp").__module__ == "fabric_ddp.strategy"
        STRATEGY_REGISTRY.register("ddp", Mine, override=True)
        assert STRATEGY_REGISTRY.get("ddp") is Mine
        assert STRATEGY_REGISTRY.get("ddp_spawn").__module__ == "fabric_ddp.strategy", "the plugin keeps working"
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "refused: The strategy 'ddp' is already registered by fabric-ddp" in result.stdout


# -- the CPU equivalents, for real on 2 processes -------------------------------------------
# The DDP snippet's settings are checked on 2 processes in fabric-ddp's tests/test_construction.py.


@pytest.mark.timeout(LAUNCH_TIMEOUT_S + 30)
def test_deepspeed_snippet_config_trains_zero_3_with_offload(tmp_path: Path) -> None:
    record = run_snippet("deepspeed_with_a_config_dict", tmp_path)

    assert record["world_size"] == 2 and record["stage"] == 3
    assert record["losses"][1] < record["losses"][0]


@pytest.mark.timeout(LAUNCH_TIMEOUT_S + 30)
def test_the_custom_fsdp_snippet_trains(tmp_path: Path) -> None:
    # FSDP by name trains in test_one_loop.py; this is the seed's custom configuration.
    record = run_snippet("fsdp_with_custom_configuration", tmp_path)

    assert record["world_size"] == 2 and record["strategy"] == "FSDPStrategy"
    assert record["losses"][1] < record["losses"][0]
