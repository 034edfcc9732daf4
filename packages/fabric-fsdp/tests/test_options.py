"""Arguments, names and pure helpers, checked in this process (no process group is formed)."""

from __future__ import annotations

import functools
import pickle

import pytest
import torch
from torch import nn
from torch.distributed.fsdp import CPUOffload, CPUOffloadPolicy, MixedPrecision, MixedPrecisionPolicy
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
from torch.distributed.fsdp.wrap import ModuleWrapPolicy, size_based_auto_wrap_policy
from torch.utils.weak import WeakIdKeyDictionary

from fabric_core import Fabric
from fabric_core.precision.half import HalfPrecision
from fabric_fsdp import FSDPPrecision, FSDPStrategy, ModelParallelStrategy, optimizer_state_to_torch
from fabric_fsdp._checkpoint import load_checkpoint
from fabric_fsdp._clip import clip_grad_norm, clip_grad_value
from fabric_fsdp._options import offload_policy_for, resolve_mixed_precision, resolve_module_policy
from fabric_fsdp._params import rebind_optimizer
from fabric_fsdp._wrap import select_modules
from fabric_fsdp.model_parallel import resolve_parallel_sizes


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(10, 10)


def tower() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 10), Block(), Block(), nn.Linear(10, 1))


def test_entry_point_registers_the_names():
    fsdp = Fabric(accelerator="cpu", devices=2, strategy="fsdp").strategy
    assert isinstance(fsdp, FSDPStrategy) and fsdp._cpu_offload is False
    offload = Fabric(accelerator="cpu", devices=2, strategy="fsdp_cpu_offload").strategy
    assert isinstance(offload, FSDPStrategy) and offload._cpu_offload is True


def test_model_parallel_by_name_says_where_parallelize_fn_goes():
    with pytest.raises(ValueError, match=r"ModelParallelStrategy\(parallelize_fn=\.\.\.\)"):
        Fabric(accelerator="cpu", devices=2, strategy="model_parallel")


@pytest.mark.parametrize(
    ("precision", "param_dtype", "scaler"),
    [("bf16-mixed", torch.bfloat16, None), ("16-mixed", torch.float16, ShardedGradScaler)],
)
def test_mixed_precision_strings_give_the_fsdp_plugin(precision, param_dtype, scaler):
    strategy = Fabric(accelerator="cpu", devices=2, strategy="fsdp", precision=precision).strategy
    assert isinstance(strategy.precision, FSDPPrecision)
    assert strategy.mp_policy == MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    assert (scaler is None) == (strategy.precision.scaler is None)
    if scaler is not None:
        assert isinstance(strategy.precision.scaler, scaler)


def test_true_half_precision_uses_the_core_plugin_and_an_explicit_policy_wins():
    strategy = Fabric(accelerator="cpu", devices=2, strategy="fsdp", precision="bf16-true").strategy
    assert isinstance(strategy.precision, HalfPrecision)
    policy = MixedPrecisionPolicy(param_dtype=torch.float16)
    explicit = FSDPStrategy(mixed_precision=policy)
    assert (
        Fabric(accelerator="cpu", devices=2, strategy=explicit, precision="bf16-mixed").strategy is explicit
    )
    assert explicit.mp_policy is policy


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"sharding_strategy": "FULL"},
            ValueError,
            "'FULL_SHARD', 'SHARD_GRAD_OP', 'HYBRID_SHARD', 'NO_SHARD'",
        ),
        ({"use_orig_params": False}, ValueError, "flat parameters"),
        ({"limit_all_gathers": "yes"}, TypeError, r"limit_all_gathers='yes'\) must be True or False"),
        (
            {"mixed_precision": MixedPrecision(keep_low_precision_grads=True)},
            ValueError,
            "keep_low_precision",
        ),
        ({"mixed_precision": "bf16"}, TypeError, "precision='bf16-mixed'"),
        ({"cpu_offload": "yes"}, TypeError, "CPUOffloadPolicy"),
        ({"state_dict_type": "distributed"}, ValueError, "'sharded'"),
        ({"auto_wrap_policy": 42}, TypeError, "auto_wrap_policy=42"),
        (
            {"activation_checkpointing": Block, "activation_checkpointing_policy": {Block}},
            ValueError,
            "not both",
        ),
        ({"activation_checkpointing": lambda m: True}, TypeError, "activation_checkpointing_policy="),
        ({"device_mesh": (1, 2)}, ValueError, "HYBRID_SHARD"),
        ({"sharding_strategy": "HYBRID_SHARD", "device_mesh": (2,)}, ValueError, "two positive sizes"),
        ({"precision": HalfPrecision(), "precision_plugin": HalfPrecision()}, ValueError, "not both"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(kwargs, error, match):
    with pytest.raises(error, match=match):
        FSDPStrategy(**kwargs)


def test_fsdp1_argument_with_no_fsdp2_counterpart_is_not_silently_dropped():
    with pytest.raises(TypeError, match="backward_prefetch"):
        FSDPStrategy(backward_prefetch="BACKWARD_PRE")  # type: ignore[call-arg]


def test_hybrid_mesh_must_cover_every_process():
    strategy = FSDPStrategy(sharding_strategy="HYBRID_SHARD", device_mesh=(3, 1))
    with pytest.raises(ValueError, match=r"multiply to devices x num_nodes"):
        Fabric(accelerator="cpu", devices=2, strategy=strategy)


def test_fsdp1_configuration_objects_are_translated():
    settings = resolve_mixed_precision(
        MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.bfloat16)
    )
    assert settings is not None and settings.buffer_dtype == torch.bfloat16
    assert settings.policy == MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    assert FSDPStrategy(cpu_offload=CPUOffload(offload_params=True))._cpu_offload is True
    assert FSDPStrategy(cpu_offload=CPUOffload(offload_params=False))._cpu_offload is False


def test_cpu_offload_pins_memory_only_where_it_can():
    assert offload_policy_for(True, "cpu") == CPUOffloadPolicy(pin_memory=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="pin_memory=False"):
            offload_policy_for(CPUOffloadPolicy(), "cpu")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({Block}, ["1", "2"]),
        (Block, ["1", "2"]),
        (ModuleWrapPolicy({Block}), ["1", "2"]),
        (lambda module: isinstance(module, nn.Linear), ["0", "1.linear", "2.linear", "3"]),
        # FSDP1 size policy: each Block's Linear (110 parameters) qualifies; once it is claimed, its Block
        # has none left, and the other layers are too small
        (functools.partial(size_based_auto_wrap_policy, min_num_params=100), ["1.linear", "2.linear"]),
    ],
    ids=["set", "class", "ModuleWrapPolicy", "callable", "size_based"],
)
def test_wrap_policies_select_bottom_up(policy, expected):
    net = tower()
    names = {module: name for name, module in net.named_modules()}
    predicate = resolve_module_policy(policy, "auto_wrap_policy")
    assert predicate is not None
    assert [names[m] for m in select_modules(net, predicate)] == expected


def test_parallel_sizes():
    assert resolve_parallel_sizes("auto", "auto", num_nodes=2, devices_per_node=4) == (2, 4)
    assert resolve_parallel_sizes(2, "auto", num_nodes=1, devices_per_node=4) == (2, 2)
    assert resolve_parallel_sizes("auto", 1, num_nodes=1, devices_per_node=4) == (4, 1)
    with pytest.raises(ValueError, match="does not divide"):
        resolve_parallel_sizes(3, "auto", num_nodes=1, devices_per_node=4)
    with pytest.raises(ValueError, match="needs 6 processes"):
        resolve_parallel_sizes(3, 2, num_nodes=1, devices_per_node=4)
    with pytest.raises(ValueError, match="positive integer"):
        ModelParallelStrategy(lambda m, mesh: m, tensor_parallel_size=0)
    strategy = ModelParallelStrategy(lambda m, mesh: m, data_parallel_size=3)
    with pytest.raises(ValueError, match="does not divide the 2 processes"):
        Fabric(accelerator="cpu", devices=2, strategy=strategy)


def identity(model: nn.Module, mesh: object) -> nn.Module:
    return model


def test_configured_strategies_survive_pickling_for_spawned_processes():
    policies = {"auto_wrap_policy": {Block}, "activation_checkpointing_policy": ModuleWrapPolicy({Block})}
    for strategy in (FSDPStrategy(**policies), ModelParallelStrategy(identity)):
        configured = Fabric(accelerator="cpu", devices=2, strategy=strategy).strategy
        clone = pickle.loads(pickle.dumps(configured))
        assert type(clone) is type(strategy) and clone.num_processes == 2


def test_optimizer_that_already_stepped_is_refused():
    old = nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([old])
    old.grad = torch.ones(3)
    optimizer.step()
    replacements = WeakIdKeyDictionary()
    replacements[old] = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="already holds state"):
        rebind_optimizer(optimizer, replacements)


def test_optimizer_over_meta_parameters_of_an_unknown_model_is_refused():
    optimizer = torch.optim.SGD([nn.Parameter(torch.empty(3, device="meta"))], lr=0.1)
    with pytest.raises(ValueError, match="meta device"):
        rebind_optimizer(optimizer, WeakIdKeyDictionary())


def test_optimizer_is_repointed_in_place():
    old, new = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([old], lr=0.1)
    group_list = optimizer.param_groups[0]["params"]
    replacements = WeakIdKeyDictionary()
    replacements[old] = new
    assert rebind_optimizer(optimizer, replacements) == 1
    assert group_list[0] is new and optimizer.param_groups[0]["params"] is group_list


def test_clipping_plain_tensors_agrees_with_torch():
    torch.manual_seed(0)
    ours, theirs = (
        [nn.Parameter(torch.randn(5)) for _ in range(2)],
        [nn.Parameter(torch.randn(5)) for _ in range(2)],
    )
    for a, b in zip(ours, theirs):
        b.data.copy_(a.data)
        a.grad = torch.randn(5)
        b.grad = a.grad.clone()
    for norm_type in (2.0, 1.0, float("inf")):
        expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type=norm_type)
        assert torch.allclose(clip_grad_norm(ours, 0.5, norm_type=norm_type), expected)
        for a, b in zip(ours, theirs):
            assert torch.allclose(a.grad, b.grad)


def test_clipping_by_value_clamps_every_element():
    parameter = nn.Parameter(torch.zeros(4))
    parameter.grad = torch.tensor([-2.0, -0.5, 0.5, 2.0])
    clip_grad_value([parameter], 1.0)
    assert parameter.grad.tolist() == [-1.0, -0.5, 0.5, 1.0]


def test_optimizer_state_to_torch_numbers_parameters_in_group_order():
    named = {
        "state": {"b": {"exp_avg": torch.ones(1)}, "a": {"exp_avg": torch.zeros(1)}},
        "param_groups": [{"lr": 0.1, "params": ["a"]}, {"lr": 0.2, "params": ["b"]}],
    }
    plain = optimizer_state_to_torch(named)
    assert plain["param_groups"] == [{"lr": 0.1, "params": [0]}, {"lr": 0.2, "params": [1]}]
    assert torch.equal(plain["state"][1]["exp_avg"], torch.ones(1))
    assert optimizer_state_to_torch(plain) is plain
    with pytest.raises(ValueError, match="param_groups"):
        optimizer_state_to_torch({"model": {}})


def test_a_directory_that_is_not_a_dcp_checkpoint_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"without a \.metadata file"):
        load_checkpoint(None, tmp_path, {}, True, None, lambda o, s: nn.Linear(1, 1))  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        load_checkpoint(None, tmp_path / "missing", {}, True, None, lambda o, s: nn.Linear(1, 1))  # type: ignore[arg-type]


class Opaque:
    """A pickled object that weights_only loading refuses."""

    def __init__(self, value: int) -> None:
        self.value = value


def test_pickled_entries_of_a_dcp_checkpoint_are_loaded_safely_unless_trusted(tmp_path):
    import torch.distributed.checkpoint as dcp

    from fabric_fsdp._dcp import load_sharded

    dcp.save({"step": 3, "numbers": [1, 2], "opaque": Opaque(7)}, checkpoint_id=tmp_path, no_dist=True)
    state = {"step": 0}
    with pytest.raises(ValueError, match="weights_only=False"):
        load_sharded(tmp_path, state, True, True, lambda o, s: nn.Linear(1, 1))
    remainder = load_sharded(tmp_path, state, True, False, lambda o, s: nn.Linear(1, 1))
    assert state["step"] == 3 and remainder["numbers"] == [1, 2] and remainder["opaque"].value == 7
