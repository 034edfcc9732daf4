"""From ``Fabric(...)`` arguments to one strategy: valid forms, and one clear error per bad input."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

from fabric_core import Fabric
from fabric_core.accelerators import CPUAccelerator
from fabric_core.connector import (
    resolve_num_nodes,
    resolve_plugins,
    resolve_precision,
)
from fabric_core.environments.local import LocalEnvironment
from fabric_core.io import TorchCheckpointIO
from fabric_core.precision import HalfPrecision, MixedPrecision, Precision
from fabric_core.registry import UnknownNameError
from fabric_core.strategies import SingleDeviceStrategy

needs_cpu_only_machine = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the error on a machine without CUDA"
)


def raise_single_error(exception: type[BaseException], **kwargs: Any) -> str:
    """Build ``Fabric(**kwargs)``, expect ``exception``, and return its message.

    The error must be the only one the user sees: no chained "during handling of the
    above exception" traceback.
    """
    with pytest.raises(exception) as excinfo:
        Fabric(**kwargs)
    error = excinfo.value
    assert error.__cause__ is None, f"{error!r} is chained to {error.__cause__!r}"
    assert error.__context__ is None or error.__suppress_context__, (
        f"{error!r} shows its context {error.__context__!r}"
    )
    return str(error)


@pytest.mark.parametrize("devices", [1, "1", "auto", -1, "-1"])
def test_one_cpu_device_can_be_asked_for_in_every_valid_form(devices: object) -> None:
    fabric = Fabric(accelerator="cpu", devices=devices)

    assert fabric.device == torch.device("cpu")
    assert fabric.world_size == 1
    assert isinstance(fabric.strategy, SingleDeviceStrategy)
    assert isinstance(fabric.accelerator, CPUAccelerator)


def test_defaults_pick_single_device_float32_on_this_machine() -> None:
    fabric = Fabric()

    assert isinstance(fabric.strategy, SingleDeviceStrategy)
    assert fabric.strategy.precision.precision == "32-true"
    assert isinstance(fabric.strategy.checkpoint_io, TorchCheckpointIO)
    if not torch.cuda.is_available():
        assert fabric.device == torch.device("cpu")


def test_unknown_strategy_lists_the_available_ones() -> None:
    message = raise_single_error(UnknownNameError, accelerator="cpu", strategy="magic")

    assert "Unknown strategy 'magic'" in message
    assert "single_device" in message and "dp" in message


def test_misspelled_strategy_suggests_the_close_name() -> None:
    message = raise_single_error(UnknownNameError, accelerator="cpu", strategy="single_devcie")

    assert "Did you mean 'single_device'" in message


@pytest.mark.parametrize(
    ("strategy", "distribution"), [("ddp", "fabric-ddp"), ("deepspeed", "fabric-deepspeed")]
)
def test_first_party_strategy_that_is_not_installed_says_what_to_install(
    strategy: str, distribution: str, without_distribution: Callable[[str], None]
) -> None:
    without_distribution(distribution)

    message = raise_single_error(UnknownNameError, accelerator="cpu", strategy=strategy)

    assert f"pip install {distribution}" in message


def test_unknown_accelerator_lists_the_available_ones() -> None:
    message = raise_single_error(UnknownNameError, accelerator="quantum")

    assert "Unknown accelerator 'quantum'" in message
    assert "cpu" in message and "cuda" in message


def test_accelerator_must_be_a_name_or_an_accelerator() -> None:
    message = raise_single_error(TypeError, accelerator=3)

    assert "accelerator=3 must be a name" in message


@needs_cpu_only_machine
def test_cuda_on_a_machine_without_gpus_is_refused_with_advice() -> None:
    message = raise_single_error(RuntimeError, accelerator="cuda")

    assert "accelerator='cuda'" in message and "no such device" in message
    assert "accelerator='cpu'" in message


def test_unknown_precision_lists_the_valid_names() -> None:
    message = raise_single_error(ValueError, accelerator="cpu", precision="8-true")

    assert "precision='8-true' is not supported" in message
    for name in ("32-true", "64-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed"):
        assert name in message


@pytest.mark.parametrize(
    ("devices", "reason"),
    [
        (0, "it must be at least 1"),
        (-3, "the only negative value allowed is -1"),
        ("abc", "neither a number"),
        ([], "the list of device indices is empty"),
        ([0, 0], "a device index is listed twice"),
    ],
)
def test_malformed_devices_give_one_error_with_the_accepted_forms(devices: object, reason: str) -> None:
    message = raise_single_error(ValueError, accelerator="cpu", devices=devices)

    assert f"devices={devices!r} is not valid" in message
    assert reason in message
    assert "devices=[0, 1]" in message


def test_cpu_devices_are_counted_not_indexed() -> None:
    message = raise_single_error(ValueError, accelerator="cpu", devices=[0])

    assert "CPU processes are counted, not indexed" in message
    assert "devices=1" in message


@pytest.mark.parametrize("num_nodes", [0, -1, 1.5, "2", True])
def test_num_nodes_must_be_a_positive_integer(num_nodes: object) -> None:
    message = raise_single_error(ValueError, accelerator="cpu", num_nodes=num_nodes)

    assert f"num_nodes={num_nodes!r} is not valid" in message


def test_resolve_num_nodes_accepts_positive_integers() -> None:
    assert resolve_num_nodes(1) == 1
    assert resolve_num_nodes(4) == 4


def test_several_devices_with_auto_strategy_and_no_ddp_plugin_says_pip_install_fabric_ddp(
    without_distribution: Callable[[str], None],
) -> None:
    without_distribution("fabric-ddp")

    message = raise_single_error(UnknownNameError, accelerator="cpu", devices=2)

    assert "2 processes need a multi-process strategy" in message
    assert "pip install fabric-ddp" in message


def test_single_device_strategy_refuses_several_devices() -> None:
    message = raise_single_error(ValueError, accelerator="cpu", strategy="single_device", devices=2)

    assert "runs one process on one device" in message
    assert "devices=1" in message


def test_single_device_strategy_refuses_several_nodes() -> None:
    message = raise_single_error(ValueError, accelerator="cpu", strategy="single_device", num_nodes=2)

    assert "num_nodes=2" in message


def test_several_nodes_with_auto_strategy_need_the_ddp_plugin(
    without_distribution: Callable[[str], None],
) -> None:
    without_distribution("fabric-ddp")

    message = raise_single_error(UnknownNameError, accelerator="cpu", num_nodes=2)

    assert "pip install fabric-ddp" in message


def test_data_parallel_refuses_the_cpu() -> None:
    message = raise_single_error(ValueError, accelerator="cpu", strategy="dp")

    assert "DataParallelStrategy needs cuda devices, but this run is on accelerator='cpu'" in message
    assert "strategy='ddp' and devices=N" in message, "the CPU alternative is named"


def test_the_nccl_backend_on_a_cpu_is_refused_before_any_process_starts() -> None:
    from fabric_core.strategies import ParallelStrategy

    class Parallel(ParallelStrategy):
        pass

    message = raise_single_error(
        ValueError, accelerator="cpu", devices=2, strategy=Parallel(process_group_backend="nccl")
    )

    assert "process_group_backend='nccl' needs NVIDIA GPUs" in message and "'gloo'" in message


def test_strategy_instance_with_its_own_precision_refuses_another_precision_argument() -> None:
    strategy = SingleDeviceStrategy(device="cpu", precision=Precision())

    message = raise_single_error(ValueError, strategy=strategy, precision="bf16-mixed")

    assert "already has the precision plugin" in message
    assert "Fabric(precision=...)" in message


def test_strategy_instance_with_its_own_precision_refuses_a_precision_plugin() -> None:
    strategy = SingleDeviceStrategy(device="cpu", precision=Precision())

    message = raise_single_error(ValueError, strategy=strategy, plugins=[HalfPrecision()])

    assert "already has the precision plugin" in message


def test_strategy_instance_with_a_device_refuses_a_conflicting_devices_argument() -> None:
    strategy = SingleDeviceStrategy(device="cpu")

    message = raise_single_error(ValueError, strategy=strategy, devices=2)

    assert "SingleDeviceStrategy(device='cpu') was combined with Fabric(" in message
    assert "devices=2" in message and "Pass the device in one place only" in message


def test_strategy_instance_with_its_checkpoint_io_refuses_another_one() -> None:
    strategy = SingleDeviceStrategy(device="cpu", checkpoint_io=TorchCheckpointIO())

    message = raise_single_error(ValueError, strategy=strategy, plugins=[TorchCheckpointIO()])

    assert "already has" in message and "CheckpointIO" in message


def test_strategy_instance_without_precision_adopts_the_precision_argument() -> None:
    strategy = SingleDeviceStrategy(device="cpu")

    fabric = Fabric(strategy=strategy, precision="bf16-mixed")

    assert fabric.strategy is strategy
    assert isinstance(strategy.precision, MixedPrecision)
    assert strategy.precision.dtype == torch.bfloat16
    assert fabric.device == torch.device("cpu")


def test_two_precision_plugins_are_refused() -> None:
    message = raise_single_error(TypeError, accelerator="cpu", plugins=[Precision(), MixedPrecision()])

    assert "plugins= holds two Precision objects" in message


def test_precision_plugin_and_precision_argument_together_are_refused() -> None:
    message = raise_single_error(
        ValueError, accelerator="cpu", plugins=[MixedPrecision()], precision="bf16-mixed"
    )

    assert "Pass one of them" in message


def test_plugins_of_unknown_kind_are_refused() -> None:
    message = raise_single_error(TypeError, accelerator="cpu", plugins=["ddp"])

    assert "plugins= got 'ddp'" in message
    assert "strategy=" in message


def test_strategy_of_the_wrong_type_is_refused() -> None:
    message = raise_single_error(TypeError, accelerator="cpu", strategy=42)

    assert "strategy=42 must be a strategy name" in message


def test_resolve_plugins_sorts_objects_by_kind() -> None:
    precision, io, environment = MixedPrecision(), TorchCheckpointIO(), LocalEnvironment()

    resolved = resolve_plugins([environment, io, precision])

    assert resolved.precision is precision
    assert resolved.checkpoint_io is io
    assert resolved.cluster_environment is environment
    assert resolve_plugins(precision).precision is precision
    assert resolve_plugins(None).precision is None


def test_plugins_are_handed_to_the_strategy() -> None:
    precision, io = HalfPrecision("bfloat16"), TorchCheckpointIO()

    fabric = Fabric(accelerator="cpu", plugins=[precision, io])

    assert fabric.strategy.precision is precision
    assert fabric.strategy.checkpoint_io is io


@pytest.mark.parametrize(
    ("legacy", "replacement"),
    [
        (32, "32-true"),
        ("32", "32-true"),
        (64, "64-true"),
        ("64", "64-true"),
        (16, "16-mixed"),
        ("16", "16-mixed"),
        ("bf16", "bf16-mixed"),
    ],
)
def test_legacy_precision_spellings_work_and_warn_at_the_callers_line(
    legacy: object, replacement: str
) -> None:
    with pytest.warns(DeprecationWarning, match=f"use precision='{replacement}' instead") as record:
        fabric = Fabric(accelerator="cpu", precision=legacy)

    # On a CPU, 16-mixed runs as bf16-mixed (with its own warning), as in Lightning Fabric.
    on_cpu = "bf16-mixed" if replacement == "16-mixed" else replacement
    assert fabric.strategy.precision.precision == on_cpu
    assert [w.filename for w in record if w.category is DeprecationWarning] == [__file__]


def test_current_precision_names_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16-mixed") == "bf16-mixed"
        assert resolve_precision(None) == "32-true"


def test_auto_strategy_is_the_accelerators_choice_when_it_makes_one() -> None:
    from fabric_core.connector import resolve_strategy
    from fabric_core.strategies import DataParallelStrategy

    class PrefersDataParallel(CPUAccelerator):
        @classmethod
        def auto_strategy(cls, total_processes: int) -> str | None:
            return "dp" if total_processes > 1 else None

    assert CPUAccelerator.auto_strategy(2) is None
    assert isinstance(resolve_strategy("auto", 2, PrefersDataParallel()), DataParallelStrategy)
    assert isinstance(resolve_strategy("auto", 1, PrefersDataParallel()), SingleDeviceStrategy)
    assert isinstance(resolve_strategy("single_device", 2, PrefersDataParallel()), SingleDeviceStrategy)
