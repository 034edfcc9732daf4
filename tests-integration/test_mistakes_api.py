"""The table of API, command-line and strategy-option mistakes: one clear message from fabric for each.

Every row commits one mistake a user plausibly makes (see :mod:`mistakes` for what the check
requires). The rows run in this process except the ``fabric run`` rows, which start the command
line; only the row about a conflict between the command line and the script starts workers.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from mistakes import CommandFailed, Mistake, check_mistake, fabric_command
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fabric_core import Fabric, seed_everything
from fabric_core.accelerators.cpu import CPUAccelerator
from fabric_core.precision.precision import Precision
from fabric_core.registry import UnknownNameError
from fabric_core.strategies.single_device import SingleDeviceStrategy


def _fabric(**kwargs: Any) -> Fabric:
    return Fabric(**{"accelerator": "cpu", "devices": 1, **kwargs})


def _set_up() -> tuple[Fabric, Any, Any]:
    fabric = _fabric()
    model = nn.Linear(2, 1)
    wrapped, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    return fabric, wrapped, optimizer


def _loss(model: nn.Module) -> torch.Tensor:
    return model(torch.ones(4, 2)).sum()


# -- training step ---------------------------------------------------------------------------


def backward_of_a_float(_: Path) -> None:
    fabric, model, _optimizer = _set_up()
    fabric.backward(_loss(model).item())  # type: ignore[arg-type]


def backward_of_a_non_scalar_loss(_: Path) -> None:
    fabric, model, _optimizer = _set_up()
    fabric.backward(model(torch.ones(4, 2)))


def backward_of_a_detached_loss(_: Path) -> None:
    fabric, model, _optimizer = _set_up()
    fabric.backward(_loss(model).detach())


def backward_before_launch_under_ddp(_: Path) -> None:
    fabric = Fabric(strategy="ddp", devices=2, accelerator="cpu")
    fabric.backward(_loss(nn.Linear(2, 1)))


def setup_before_launch_under_ddp(_: Path) -> None:
    fabric = Fabric(strategy="ddp", devices=2, accelerator="cpu")
    fabric.setup(nn.Linear(2, 1))


def launch_without_a_function_under_ddp_spawn(_: Path) -> None:
    Fabric(strategy="ddp_spawn", devices=2, accelerator="cpu").launch()


def launch_of_a_non_function(_: Path) -> None:
    _fabric().launch(5)  # type: ignore[arg-type]


def clip_with_negative_max_norm(_: Path) -> None:
    fabric, model, optimizer = _set_up()
    fabric.clip_gradients(model, optimizer, max_norm=-1.0)


def clip_with_zero_clip_val(_: Path) -> None:
    fabric, model, optimizer = _set_up()
    fabric.clip_gradients(model, optimizer, clip_val=0)


def clip_with_both(_: Path) -> None:
    fabric, model, optimizer = _set_up()
    fabric.clip_gradients(model, optimizer, clip_val=1.0, max_norm=1.0)


def clip_with_neither(_: Path) -> None:
    fabric, model, optimizer = _set_up()
    fabric.clip_gradients(model, optimizer)


def clip_with_a_string_max_norm(_: Path) -> None:
    fabric, model, optimizer = _set_up()
    fabric.clip_gradients(model, optimizer, max_norm="1.0")  # type: ignore[arg-type]


def clip_in_the_wrong_order(_: Path) -> None:
    fabric, model, optimizer = _set_up()
    fabric.clip_gradients(optimizer, model, max_norm=1.0)


def no_backward_sync_on_an_unwrapped_module(_: Path) -> None:
    _fabric().no_backward_sync(nn.Linear(2, 1))


def mark_a_forward_method_by_number(_: Path) -> None:
    _fabric, model, _optimizer = _set_up()
    model.mark_forward_method(5)


def backward_with_the_original_model(_: Path) -> None:
    fabric, model, _optimizer = _set_up()
    fabric.backward(_loss(model), model=model.module)


def mark_an_unknown_forward_method(_: Path) -> None:
    _fabric, model, _optimizer = _set_up()
    model.mark_forward_method("generate")


# -- set-up ------------------------------------------------------------------------------


def optimizer_of_another_model(_: Path) -> None:
    model, other = nn.Linear(2, 1), nn.Linear(2, 1)
    _fabric().setup(model, torch.optim.SGD(other.parameters(), lr=0.1))


def setup_optimizer_before_model(_: Path) -> None:
    model = nn.Linear(2, 1)
    _fabric().setup(torch.optim.SGD(model.parameters(), lr=0.1), model)  # type: ignore[arg-type]


def scheduler_passed_as_an_optimizer(_: Path) -> None:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    _fabric().setup(model, optimizer, scheduler)  # type: ignore[arg-type]


def scheduler_of_another_optimizer(_: Path) -> None:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    other = torch.optim.SGD(model.parameters(), lr=0.1)
    _fabric().setup(model, optimizer, scheduler=torch.optim.lr_scheduler.StepLR(other, step_size=1))


def setup_of_a_set_up_model(_: Path) -> None:
    fabric, model, _optimizer = _set_up()
    fabric.setup(model)


class _InPlaceStrategy(SingleDeviceStrategy):
    """A strategy that takes the model over when it sets it up, as FSDP and DeepSpeed do."""

    allows_repeated_setup = False


def setup_twice_under_an_in_place_strategy(_: Path) -> None:
    fabric = Fabric(strategy=_InPlaceStrategy(device="cpu"), accelerator="cpu")
    model = nn.Linear(2, 1)
    fabric.setup(model)
    fabric.setup(model)


def setup_of_a_set_up_optimizer(_: Path) -> None:
    fabric, _model, optimizer = _set_up()
    fabric.setup(nn.Linear(2, 1), optimizer)


def setup_optimizers_of_nothing(_: Path) -> None:
    _fabric().setup_optimizers()


def setup_dataloaders_of_a_dataset(_: Path) -> None:
    _fabric().setup_dataloaders(TensorDataset(torch.ones(4, 2)))  # type: ignore[arg-type]


def setup_dataloaders_of_nothing(_: Path) -> None:
    _fabric().setup_dataloaders()


def setup_dataloaders_twice(_: Path) -> None:
    fabric = _fabric()
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(torch.ones(4, 2))))
    fabric.setup_dataloaders(loader)


def setup_dataloaders_with_a_text_flag(_: Path) -> None:
    _fabric().setup_dataloaders(DataLoader(TensorDataset(torch.ones(4, 2))), use_distributed_sampler="no")  # type: ignore[arg-type]


def init_module_with_a_text_flag(_: Path) -> None:
    with _fabric().init_module(empty_init="yes"):  # type: ignore[arg-type]
        nn.Linear(2, 1)


# -- collectives ----------------------------------------------------------------------------


def all_reduce_with_a_typo(_: Path) -> None:
    _fabric().all_reduce(torch.ones(2), reduce_op="mena")


def all_reduce_with_an_op_of_the_wrong_type(_: Path) -> None:
    _fabric().all_reduce(torch.ones(2), reduce_op=max)  # type: ignore[arg-type]


def all_reduce_of_a_string(_: Path) -> None:
    _fabric().all_reduce("loss")


def broadcast_from_a_missing_rank(_: Path) -> None:
    _fabric().broadcast(torch.ones(1), src=1)


def all_gather_of_an_object(_: Path) -> None:
    _fabric().all_gather(object())


def all_gather_of_a_dict_with_a_string(_: Path) -> None:
    _fabric().all_gather({"loss": torch.ones(1), "name": "run-1"})


# -- constructor arguments ------------------------------------------------------------------


def unknown_accelerator(_: Path) -> None:
    Fabric(accelerator="gpus")


def accelerator_of_the_wrong_type(_: Path) -> None:
    Fabric(accelerator=1)  # type: ignore[arg-type]


def strategy_instance_and_another_accelerator(_: Path) -> None:
    Fabric(strategy=SingleDeviceStrategy(device="cpu", accelerator=CPUAccelerator()), accelerator="cuda")


def strategy_instance_and_a_precision(_: Path) -> None:
    strategy = SingleDeviceStrategy(device="cpu", precision_plugin=Precision())
    Fabric(strategy=strategy, precision="bf16-mixed", accelerator="cpu")


class _Callback:
    def on_train_start(self) -> None:
        """Nothing to do."""


def loggers_of_a_class(_: Path) -> None:
    from fabric_core.loggers import CSVLogger

    _fabric(loggers=CSVLogger)


def logger_when_there_is_none(_: Path) -> None:
    _fabric().logger  # noqa: B018


def seed_too_large(_: Path) -> None:
    seed_everything(2**40, verbose=False)


def seed_negative(_: Path) -> None:
    Fabric.seed_everything(-1, verbose=False)


def seed_text(_: Path) -> None:
    seed_everything("42", verbose=False)  # type: ignore[arg-type]


# -- strategy options -------------------------------------------------------------------------


def _ddp(**kwargs: Any) -> Fabric:
    from fabric_ddp import DDPStrategy

    return Fabric(strategy=DDPStrategy(**kwargs), accelerator="cpu", devices=2)


def _hook_of_one_argument(bucket: Any) -> Any:
    return bucket


def ddp_comm_wrapper_not_callable(_: Path) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    _ddp(ddp_comm_hook=default_hooks.allreduce_hook, ddp_comm_wrapper=1)


def ddp_comm_state_without_a_hook(_: Path) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import PowerSGDState

    _ddp(ddp_comm_state=PowerSGDState(process_group=None))


def ddp_comm_wrapper_without_a_hook(_: Path) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    _ddp(ddp_comm_wrapper=default_hooks.fp16_compress_wrapper)


def fsdp_auto_wrap_policy_unbound(_: Path) -> None:
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from fabric_fsdp import FSDPStrategy

    FSDPStrategy(auto_wrap_policy=transformer_auto_wrap_policy)


def _deepspeed(**kwargs: Any) -> Fabric:
    from fabric_deepspeed import DeepSpeedStrategy

    return Fabric(strategy=DeepSpeedStrategy(**kwargs), accelerator="cpu", devices=2)


def deepspeed_in_double_precision(_: Path) -> None:
    Fabric(strategy="deepspeed", accelerator="cpu", devices=2, precision="64-true")


# -- fabric run -------------------------------------------------------------------------------


def _script(tmp_path: Path, body: str = "print('trained')\n") -> Path:
    script = tmp_path / "train.py"
    script.write_text(body)
    return script


def run_with_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fabric_command("run", "--main-port", str(port), str(_script(tmp_path)), cwd=tmp_path)


def run_with_a_missing_script(tmp_path: Path) -> None:
    fabric_command("run", "trian.py", cwd=tmp_path)


def run_with_a_directory_as_script(tmp_path: Path) -> None:
    fabric_command("run", str(tmp_path), cwd=tmp_path)


def run_conflicting_with_the_script(tmp_path: Path) -> None:
    body = "from fabric_core import Fabric\nFabric(accelerator='cpu', devices=1)\nprint('trained')\n"
    fabric_command(
        "run", "--accelerator", "cpu", "--devices", "2", str(_script(tmp_path, body)), cwd=tmp_path
    )


Make = Callable[[Path], object]


def _building(**kwargs: Any) -> Make:
    """A row that builds ``Fabric(accelerator="cpu", devices=1, **kwargs)``."""
    return lambda _: _fabric(**kwargs)


def _ddp_with(**kwargs: Any) -> Make:
    """A row that builds a Fabric of two CPU processes with ``DDPStrategy(**kwargs)``."""
    return lambda _: _ddp(**kwargs)


def _fsdp_with(**kwargs: Any) -> Make:
    """A row that builds ``FSDPStrategy(**kwargs)``."""

    def make(_: Path) -> object:
        from fabric_fsdp import FSDPStrategy

        return FSDPStrategy(**kwargs)

    return make


def _deepspeed_with(**kwargs: Any) -> Make:
    """A row that builds a Fabric of two CPU processes with ``DeepSpeedStrategy(**kwargs)``."""
    return lambda _: _deepspeed(**kwargs)


def _run(*args: str) -> Make:
    """A row that runs ``fabric run ARGS train.py`` on a script that only prints."""
    return lambda tmp_path: fabric_command("run", *args, str(_script(tmp_path)), cwd=tmp_path)


MISTAKES = [
    # training step
    Mistake("backward-of-a-float", backward_of_a_float, TypeError, ("fabric.backward(", "float", ".item()")),
    Mistake("backward-of-a-non-scalar", backward_of_a_non_scalar_loss, ValueError, ("(4, 1)", "loss.mean()")),
    Mistake(
        "backward-of-a-detached-loss", backward_of_a_detached_loss, ValueError, ("does not require grad",)
    ),
    Mistake(
        "backward-before-launch-ddp", backward_before_launch_under_ddp, RuntimeError, ("fabric.launch()",)
    ),
    Mistake("setup-before-launch-ddp", setup_before_launch_under_ddp, RuntimeError, ("fabric.launch()",)),
    Mistake(
        "launch-without-function-ddp-spawn",
        launch_without_a_function_under_ddp_spawn,
        TypeError,
        ("fabric.launch(train",),
    ),
    Mistake("launch-of-a-non-function", launch_of_a_non_function, TypeError, ("5", "function")),
    Mistake("clip-negative-max-norm", clip_with_negative_max_norm, ValueError, ("max_norm=-1.0", "positive")),
    Mistake("clip-zero-clip-val", clip_with_zero_clip_val, ValueError, ("clip_val=0", "positive")),
    Mistake("clip-both", clip_with_both, ValueError, ("exactly one", "both")),
    Mistake("clip-neither", clip_with_neither, ValueError, ("exactly one", "neither")),
    Mistake("clip-string-max-norm", clip_with_a_string_max_norm, ValueError, ("max_norm='1.0'", "number")),
    Mistake("clip-wrong-order", clip_in_the_wrong_order, TypeError, ("clip_gradients(model, optimizer",)),
    Mistake(
        "no-backward-sync-unwrapped",
        no_backward_sync_on_an_unwrapped_module,
        TypeError,
        ("Linear", "fabric.setup()"),
    ),
    Mistake("mark-forward-method-number", mark_a_forward_method_by_number, TypeError, ("(5)", "'generate'")),
    Mistake(
        "backward-with-original-model",
        backward_with_the_original_model,
        TypeError,
        ("model=Linear(...)", "fabric.setup() returned"),
    ),
    Mistake("mark-unknown-forward-method", mark_an_unknown_forward_method, ValueError, ("'generate'",)),
    # set-up
    Mistake(
        "optimizer-of-another-model",
        optimizer_of_another_model,
        ValueError,
        ("SGD", "none of the model's parameters", "model.parameters()"),
    ),
    Mistake(
        "setup-optimizer-first", setup_optimizer_before_model, TypeError, ("SGD", "setup(model, optimizer")
    ),
    Mistake("scheduler-as-optimizer", scheduler_passed_as_an_optimizer, TypeError, ("StepLR", "scheduler=")),
    Mistake(
        "scheduler-of-another-optimizer", scheduler_of_another_optimizer, TypeError, ("another optimizer",)
    ),
    Mistake("setup-of-a-set-up-model", setup_of_a_set_up_model, ValueError, ("already set up",)),
    Mistake(
        "setup-twice-in-place",
        setup_twice_under_an_in_place_strategy,
        ValueError,
        ("Linear was already set up", "_InPlaceStrategy", "fabric.setup() returned"),
    ),
    Mistake("setup-of-a-set-up-optimizer", setup_of_a_set_up_optimizer, ValueError, ("already set up",)),
    Mistake("setup-optimizers-of-nothing", setup_optimizers_of_nothing, TypeError, ("at least one",)),
    Mistake(
        "setup-dataloaders-of-a-dataset",
        setup_dataloaders_of_a_dataset,
        TypeError,
        ("TensorDataset", "DataLoader(dataset"),
    ),
    Mistake("setup-dataloaders-of-nothing", setup_dataloaders_of_nothing, TypeError, ("at least one",)),
    Mistake("setup-dataloaders-twice", setup_dataloaders_twice, ValueError, ("already set up",)),
    Mistake(
        "setup-dataloaders-text-flag",
        setup_dataloaders_with_a_text_flag,
        TypeError,
        ("use_distributed_sampler='no'", "True or False"),
    ),
    Mistake(
        "init-module-text-flag",
        init_module_with_a_text_flag,
        TypeError,
        ("empty_init='yes'", "True or False"),
    ),
    # collectives
    Mistake(
        "all-reduce-op-typo", all_reduce_with_a_typo, ValueError, ("reduce_op='mena'", "Did you mean 'mean'")
    ),
    Mistake(
        "all-reduce-op-of-wrong-type",
        all_reduce_with_an_op_of_the_wrong_type,
        TypeError,
        ("reduce_op=", "'max'"),
    ),
    Mistake("all-reduce-of-a-string", all_reduce_of_a_string, TypeError, ("'loss'", "fabric.broadcast")),
    Mistake(
        "broadcast-from-missing-rank", broadcast_from_a_missing_rank, ValueError, ("src=1", "from 0 to 0")
    ),
    Mistake("all-gather-of-an-object", all_gather_of_an_object, TypeError, ("object", "fabric.broadcast")),
    Mistake(
        "all-gather-of-a-string-entry", all_gather_of_a_dict_with_a_string, TypeError, ("'run-1'", "name")
    ),
    # constructor arguments
    Mistake(
        "unknown-accelerator", unknown_accelerator, UnknownNameError, ("'gpus'", "cpu", "Did you mean 'gpu'")
    ),
    Mistake(
        "accelerator-of-wrong-type", accelerator_of_the_wrong_type, TypeError, ("accelerator=1", "'cpu'")
    ),
    Mistake(
        "unknown-strategy",
        _building(strategy="ddp_spwan"),
        UnknownNameError,
        ("'ddp_spwan'", "Did you mean 'ddp_spawn'"),
    ),
    Mistake("strategy-one-letter-off", _building(strategy="dpp"), UnknownNameError, ("'dp' or 'ddp'",)),
    Mistake(
        "strategy-not-installed",
        _building(strategy="xla_fsdp"),
        UnknownNameError,
        ("'xla_fsdp'", "pip install fabric-xla"),
    ),
    Mistake(
        "strategy-class-not-instance",
        _building(strategy=SingleDeviceStrategy),
        TypeError,
        ("SingleDeviceStrategy", "strategy=SingleDeviceStrategy("),
    ),
    Mistake(
        "unknown-precision",
        _building(precision="bf16-mix"),
        ValueError,
        ("'bf16-mix'", "Did you mean 'bf16-mixed'"),
    ),
    Mistake("precision-of-wrong-type", _building(precision=16.0), ValueError, ("16.0", "'16-mixed'")),
    Mistake(
        "precision-with-underscore", _building(precision="16_mixed"), ValueError, ("'16_mixed'", "'16-mixed'")
    ),
    Mistake("precision-fp16", _building(precision="fp16"), ValueError, ("'fp16'", "'16-mixed'")),
    Mistake("devices-zero", _building(devices=0), ValueError, ("devices=0", "at least 1")),
    Mistake("devices-negative", _building(devices=-3), ValueError, ("devices=-3", "-1")),
    Mistake("devices-text", _building(devices="abc"), ValueError, ("devices='abc'", "devices=2")),
    Mistake("devices-float", _building(devices=2.0), ValueError, ("devices=2.0", "devices=2")),
    Mistake("devices-repeated-index", _building(devices=[0, 0]), ValueError, ("devices=[0, 0]", "twice")),
    Mistake("num-nodes-zero", _building(num_nodes=0), ValueError, ("num_nodes=0", ">= 1")),
    Mistake("num-nodes-text", _building(num_nodes="2"), ValueError, ("num_nodes='2'", "integer")),
    Mistake("plugins-of-a-number", _building(plugins=[42]), TypeError, ("42", "Precision, CheckpointIO")),
    Mistake(
        "plugins-two-precisions", _building(plugins=[Precision(), Precision()]), TypeError, ("two Precision",)
    ),
    Mistake(
        "precision-and-plugin",
        _building(precision="32-true", plugins=[Precision()]),
        ValueError,
        ("precision='32-true'", "one of"),
    ),
    Mistake(
        "strategy-instance-other-accelerator",
        strategy_instance_and_another_accelerator,
        ValueError,
        ("accelerator='cuda'", "one place"),
    ),
    Mistake(
        "strategy-instance-and-precision",
        strategy_instance_and_a_precision,
        ValueError,
        ("already has the precision plugin",),
    ),
    Mistake("callbacks-of-a-number", _building(callbacks=5), TypeError, ("callbacks=5", "instance")),
    Mistake(
        "callbacks-of-a-class", _building(callbacks=[_Callback]), TypeError, ("_Callback", "_Callback()")
    ),
    Mistake("callbacks-of-a-function", _building(callbacks=[print]), TypeError, ("print", "methods")),
    Mistake("loggers-of-an-object", _building(loggers=[object()]), TypeError, ("loggers[0]", "log_metrics")),
    Mistake("loggers-of-a-class", loggers_of_a_class, TypeError, ("CSVLogger", "CSVLogger('logs')")),
    Mistake("dp-on-the-cpu", _building(strategy="dp"), ValueError, ("accelerator='cpu'", "strategy='ddp'")),
    Mistake(
        "single-device-on-three-devices",
        _building(strategy="single_device", devices=3),
        ValueError,
        ("devices=3", "strategy='ddp'"),
    ),
    Mistake("loggers-of-a-name", _building(loggers="csv"), TypeError, ("loggers='csv'", "CSVLogger")),
    Mistake("logger-when-none", logger_when_there_is_none, RuntimeError, ("no logger", "loggers=")),
    Mistake("seed-too-large", seed_too_large, ValueError, ("seed=1099511627776", "4294967295")),
    Mistake("seed-negative", seed_negative, ValueError, ("seed=-1", "[0, ")),
    Mistake("seed-text", seed_text, ValueError, ("seed='42'", "integer")),
    # strategy options
    Mistake(
        "ddp-comm-hook-not-callable",
        _ddp_with(ddp_comm_hook="fp16_compress_hook"),
        TypeError,
        ("ddp_comm_hook='fp16_compress_hook'", "default_hooks"),
    ),
    Mistake(
        "ddp-comm-hook-wrong-signature",
        _ddp_with(ddp_comm_hook=_hook_of_one_argument),
        TypeError,
        ("_hook_of_one_argument", "(state, bucket)"),
    ),
    Mistake(
        "ddp-comm-wrapper-not-callable", ddp_comm_wrapper_not_callable, TypeError, ("ddp_comm_wrapper=1",)
    ),
    Mistake(
        "ddp-comm-state-without-hook",
        ddp_comm_state_without_a_hook,
        ValueError,
        ("ddp_comm_state=", "without ddp_comm_hook"),
    ),
    Mistake(
        "ddp-comm-wrapper-without-hook",
        ddp_comm_wrapper_without_a_hook,
        ValueError,
        ("ddp_comm_wrapper=", "without ddp_comm_hook"),
    ),
    Mistake(
        "ddp-unknown-keyword",
        _ddp_with(find_unused_parameter=True),
        TypeError,
        ("find_unused_parameter", "find_unused_parameters"),
    ),
    Mistake(
        "process-group-backend-typo",
        _ddp_with(process_group_backend="glo"),
        ValueError,
        ("process_group_backend='glo'", "Did you mean 'gloo'"),
    ),
    Mistake(
        "process-group-backend-nccl-on-cpu",
        _ddp_with(process_group_backend="nccl"),
        ValueError,
        ("process_group_backend='nccl'", "'gloo'"),
    ),
    Mistake(
        "fsdp-async-save-text", _fsdp_with(async_save="yes"), TypeError, ("async_save='yes'", "True or False")
    ),
    Mistake(
        "fsdp-auto-wrap-number",
        _fsdp_with(auto_wrap_policy=5),
        TypeError,
        ("auto_wrap_policy=5", "{Block}"),
    ),
    Mistake(
        "fsdp-auto-wrap-names",
        _fsdp_with(auto_wrap_policy={"Linear"}),
        TypeError,
        ("auto_wrap_policy", "'Linear'"),
    ),
    Mistake(
        "fsdp-auto-wrap-module-instance",
        _fsdp_with(auto_wrap_policy=nn.Linear(2, 1)),
        TypeError,
        ("auto_wrap_policy", "instance", "{Linear}"),
    ),
    Mistake(
        "fsdp-auto-wrap-two-arguments",
        _fsdp_with(auto_wrap_policy=lambda module, numel: numel > 10),
        TypeError,
        ("auto_wrap_policy", "module -> bool"),
    ),
    Mistake(
        "fsdp-auto-wrap-unbound",
        fsdp_auto_wrap_policy_unbound,
        TypeError,
        ("transformer_layer_cls", "functools.partial"),
    ),
    Mistake(
        "fsdp-sharding-strategy-typo",
        _fsdp_with(sharding_strategy="FULL"),
        ValueError,
        ("'FULL'", "'FULL_SHARD'"),
    ),
    Mistake(
        "fsdp-cpu-offload-string", _fsdp_with(cpu_offload="yes"), TypeError, ("cpu_offload='yes'", "True")
    ),
    Mistake(
        "fsdp-state-dict-type-local",
        _fsdp_with(state_dict_type="local"),
        ValueError,
        ("'local'", "'sharded'"),
    ),
    Mistake(
        "fsdp-unknown-keyword",
        _fsdp_with(backward_prefetch=True),
        TypeError,
        ("backward_prefetch", "FSDP2 prefetches"),
    ),
    Mistake(
        "deepspeed-offload-optimizer-cpu",
        _deepspeed_with(offload_optimizer="cpu"),
        ValueError,
        ("offload_optimizer='cpu'", "offload_optimizer=True", "offload_optimizer_device='cpu'"),
    ),
    Mistake(
        "deepspeed-config-number-key",
        _deepspeed_with(config={"zero_optimization": {"stage": 2, 3: True}}),
        ValueError,
        ("zero_optimization", "3", "string"),
    ),
    Mistake(
        "deepspeed-config-string-batch-size",
        _deepspeed_with(config={"train_micro_batch_size_per_gpu": "4"}),
        ValueError,
        ("train_micro_batch_size_per_gpu = '4'", "integer"),
    ),
    Mistake(
        "deepspeed-config-string-switch",
        _deepspeed_with(config={"bf16": {"enabled": "true"}}),
        ValueError,
        ("bf16.enabled = 'true'", "true or false"),
    ),
    Mistake(
        "deepspeed-config-offload-string",
        _deepspeed_with(config={"zero_optimization": {"stage": 2, "offload_optimizer": "cpu"}}),
        ValueError,
        ("zero_optimization.offload_optimizer = 'cpu'", '{"device": "cpu"}'),
    ),
    Mistake(
        "deepspeed-config-section-typo",
        _deepspeed_with(config={"zero_optimisation": {"stage": 3}}),
        ValueError,
        ("'zero_optimisation'", "'zero_optimization'"),
    ),
    Mistake(
        "deepspeed-config-offload-to-gpu",
        _deepspeed_with(config={"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "gpu"}}}),
        ValueError,
        ("zero_optimization.offload_optimizer.device = 'gpu'", "'cpu', 'nvme' or 'none'"),
    ),
    Mistake(
        "deepspeed-gradient-clipping-string",
        _deepspeed_with(gradient_clipping="1.0"),
        ValueError,
        ("gradient_clipping = '1.0'", "number"),
    ),
    Mistake(
        "deepspeed-remote-device-gpu",
        _deepspeed_with(stage=3, remote_device="gpu"),
        ValueError,
        ("remote_device='gpu'", "'cpu'"),
    ),
    Mistake(
        "deepspeed-double-precision", deepspeed_in_double_precision, ValueError, ("'64-true'", "32-true")
    ),
    Mistake("deepspeed-stage-four", _deepspeed_with(stage=4), ValueError, ("stage=4", "0, 1, 2 or 3")),
    Mistake(
        "deepspeed-unknown-keyword",
        _deepspeed_with(offload_optimiser=True),
        TypeError,
        ("offload_optimiser", "offload_optimizer"),
    ),
    Mistake(
        "deepspeed-missing-config",
        _deepspeed_with(config="no-such-dir/ds_config.json"),
        FileNotFoundError,
        ("ds_config.json",),
    ),
    # fabric run
    Mistake(
        "run-unknown-strategy", _run("--strategy", "fdsp"), CommandFailed, ("'fdsp'", "Did you mean 'fsdp'")
    ),
    Mistake(
        "run-unknown-precision", _run("--precision", "bf16-mix"), CommandFailed, ("'bf16-mix'", "bf16-mixed")
    ),
    Mistake(
        "run-zero-devices", _run("--devices", "0"), CommandFailed, ("--devices 0 is not valid", "at least 1")
    ),
    Mistake("run-text-devices", _run("--devices", "two"), CommandFailed, ("--devices two", "--devices 2")),
    Mistake(
        "run-port-out-of-range", _run("--main-port", "70000"), CommandFailed, ("--main-port 70000", "65535")
    ),
    Mistake("run-port-in-use", run_with_port_in_use, CommandFailed, ("is in use", "--main-port")),
    Mistake(
        "run-negative-grace-period",
        _run("--grace-period", "-3"),
        CommandFailed,
        ("'-3'", "number of seconds"),
    ),
    Mistake("run-missing-script", run_with_a_missing_script, CommandFailed, ("'trian.py'", "does not exist")),
    Mistake("run-directory-as-script", run_with_a_directory_as_script, CommandFailed, ("is a directory",)),
    Mistake(
        "run-conflicts-with-script",
        run_conflicting_with_the_script,
        CommandFailed,
        ("--devices 2` conflicts with Fabric(devices=1)", "Remove one of them"),
    ),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=str)
def test_mistake(mistake: Mistake, tmp_path: Path) -> None:
    check_mistake(mistake, tmp_path)


def test_the_rows_are_distinct() -> None:
    names = [mistake.name for mistake in MISTAKES]
    assert len(set(names)) == len(names) >= 55
    assert len({mistake.make for mistake in MISTAKES}) == len(MISTAKES)
