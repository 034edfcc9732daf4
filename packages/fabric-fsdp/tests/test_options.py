"""Arguments, names and pure helpers, checked in this process (no process group is formed)."""

from __future__ import annotations

import functools
import inspect
import pickle
from typing import Any

import pytest
import torch
from torch import nn
from torch.distributed.fsdp import (
    CPUOffload,
    CPUOffloadPolicy,
    MixedPrecision,
    MixedPrecisionPolicy,
    ShardingStrategy,
    StateDictType,
)
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
from torch.distributed.fsdp.wrap import (
    ModuleWrapPolicy,
    lambda_auto_wrap_policy,
    size_based_auto_wrap_policy,
    transformer_auto_wrap_policy,
)
from torch.utils.weak import WeakIdKeyDictionary

from fabric_core import Fabric
from fabric_core.precision.half import HalfPrecision
from fabric_fsdp import FSDPPrecision, FSDPStrategy, ModelParallelStrategy, optimizer_state_to_torch
from fabric_fsdp._checkpoint import load_checkpoint
from fabric_fsdp._clip import clip_grad_norm, clip_grad_value
from fabric_fsdp._options import offload_policy_for, resolve_mixed_precision, resolve_module_policy
from fabric_fsdp._params import rebind_optimizer
from fabric_fsdp._wrap import select_modules
from fabric_fsdp.model_parallel import default_units, resolve_parallel_sizes


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


def test_model_parallel_by_name_runs_fsdp_over_every_process():
    strategy = Fabric(accelerator="cpu", devices=2, strategy="model_parallel").strategy
    assert isinstance(strategy, ModelParallelStrategy)
    assert (strategy.data_parallel_size, strategy.tensor_parallel_size) == (2, 1)
    assert strategy.distributed_sampler_kwargs == {"num_replicas": 2, "rank": 0}


def test_default_parallelize_shards_each_child_block_and_leaves_tied_ones_to_the_root():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(5, 4)
            self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
            self.norm = nn.LayerNorm(4)
            self.act = nn.ReLU()
            self.head = nn.Linear(4, 5, bias=False)
            self.head.weight = self.embed.weight

    net = Tied()
    assert default_units(net) == [net.blocks[0], net.blocks[1], net.norm]
    assert [type(unit).__name__ for unit in default_units(tower())] == ["Linear", "Block", "Block", "Linear"]


@pytest.mark.parametrize(
    ("precision", "param_dtype", "scaler"),
    [("bf16-mixed", torch.bfloat16, None), ("16-mixed", torch.float16, ShardedGradScaler)],
)
def test_mixed_precision_strings_give_the_fsdp_plugin(precision, param_dtype, scaler):
    plugin = FSDPStrategy.precision_for(precision, "cpu")
    assert isinstance(plugin, FSDPPrecision)
    assert plugin.mp_policy == MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    assert (scaler is None) == (plugin.scaler is None)
    if scaler is not None:
        assert isinstance(plugin.scaler, scaler)
    # through Fabric (on a CPU, core runs '16-mixed' as 'bf16-mixed')
    strategy = Fabric(accelerator="cpu", devices=2, strategy="fsdp", precision="bf16-mixed").strategy
    assert isinstance(strategy.precision, FSDPPrecision) and strategy.mp_policy == MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32
    )


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
        ({"precision": HalfPrecision(), "precision_plugin": HalfPrecision()}, ValueError, "Pass one"),
        ({"state_dict_type": StateDictType.LOCAL_STATE_DICT}, ValueError, "SHARDED_STATE_DICT"),
        ({"activation_checkpointing": True}, ValueError, r"auto_wrap_policy=\{Block\}"),
        (
            {"mp_policy": MixedPrecisionPolicy(), "mixed_precision": MixedPrecisionPolicy()},
            ValueError,
            "Pass one",
        ),
        ({"no_such_argument": 1}, TypeError, "shard_placement_fn, mp_policy, offload_policy, ignored_params"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(kwargs, error, match):
    with pytest.raises(error, match=match):
        FSDPStrategy(**kwargs)


def test_fsdp1_argument_with_no_fsdp2_counterpart_is_not_silently_dropped():
    with pytest.raises(TypeError, match=r"backward_prefetch=.*FSDP1-only arguments: backward_prefetch"):
        FSDPStrategy(backward_prefetch="BACKWARD_PRE")


SEED_FSDP = [
    ("cpu_offload", None),
    ("mixed_precision", None),
    ("auto_wrap_policy", None),
    ("activation_checkpointing", None),
    ("activation_checkpointing_policy", None),
    ("sharding_strategy", None),
    ("state_dict_type", None),
    ("use_orig_params", False),
    ("limit_all_gathers", True),
    ("sync_module_states", False),
    ("forward_prefetch", False),
    ("parallel_devices", None),
    ("cluster_environment", None),
    ("checkpoint_io", None),
    ("precision_plugin", None),
    ("process_group_backend", None),
    ("timeout", None),
]
SEED_MODEL_PARALLEL = [("accelerator", None), ("checkpoint_io", None), ("precision_plugin", None)]


@pytest.mark.parametrize(
    ("cls", "seed"), [(FSDPStrategy, SEED_FSDP), (ModelParallelStrategy, SEED_MODEL_PARALLEL)]
)
def test_constructor_has_the_seeds_positional_parameters_then_keyword_only_ones(cls, seed):
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    positional = [p for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == seed
    rest = parameters[len(positional) :]
    assert all(p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD) for p in rest)
    if cls is FSDPStrategy:
        assert rest[-1].kind is inspect.Parameter.VAR_KEYWORD
    else:
        assert [p.name for p in rest[:4]] == [
            "parallelize_fn",
            "data_parallel_size",
            "tensor_parallel_size",
            "save_distributed_checkpoint",
        ]


def test_the_seeds_defaults_passed_explicitly_and_by_position_are_accepted():
    explicit = FSDPStrategy(*[default for _, default in SEED_FSDP])
    assert explicit._plan.name == "FULL_SHARD" and explicit._sharded_checkpoints
    assert explicit._cpu_offload is False and explicit._checkpointing is None
    for value in (True, False):
        FSDPStrategy(use_orig_params=value, limit_all_gathers=value, sync_module_states=value)
    assert FSDPStrategy(state_dict_type=StateDictType.FULL_STATE_DICT)._sharded_checkpoints is False
    assert FSDPStrategy(sharding_strategy=ShardingStrategy.SHARD_GRAD_OP)._plan.name == "SHARD_GRAD_OP"
    precision = HalfPrecision()
    assert ModelParallelStrategy(None, None, precision).precision is precision
    assert FSDPStrategy(precision_plugin=precision).precision is precision


def test_sharded_strategies_refuse_to_set_up_a_module_twice():
    assert FSDPStrategy.allows_repeated_setup is False
    assert ModelParallelStrategy.allows_repeated_setup is False


def test_bare_transformer_auto_wrap_policy_gets_one_error_naming_the_fix():
    seed_snippet = {
        "cpu_offload": True,
        "mixed_precision": MixedPrecision(
            param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16, buffer_dtype=torch.bfloat16
        ),
        "auto_wrap_policy": transformer_auto_wrap_policy,
        "activation_checkpointing": True,
    }
    fix = r"functools\.partial\(transformer_auto_wrap_policy, transformer_layer_cls=\{Block\}\)"
    with pytest.raises(TypeError, match=fix) as error:
        FSDPStrategy(**seed_snippet)
    assert "auto_wrap_policy={Block}" in str(error.value)
    with pytest.raises(TypeError, match=r"lambda_fn=\.\.\."):
        FSDPStrategy(auto_wrap_policy=lambda_auto_wrap_policy)
    # the fixed snippet is accepted, and the FSDP1 MixedPrecision becomes FSDP2's policy
    seed_snippet["auto_wrap_policy"] = functools.partial(
        transformer_auto_wrap_policy, transformer_layer_cls={Block}
    )
    strategy = FSDPStrategy(**seed_snippet)
    assert strategy.mp_policy == MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16)
    assert strategy._cpu_offload is True and strategy._checkpointing is True
    assert offload_policy_for(strategy._cpu_offload, "cpu") == CPUOffloadPolicy(pin_memory=False)
    predicate = resolve_module_policy(strategy.configure_fsdp_auto_wrap_policy(tower()), "auto_wrap_policy")
    assert predicate is not None and len(select_modules(tower(), predicate)) == 2


def test_configure_fsdp_auto_wrap_policy_returns_the_policy_and_can_be_overridden():
    assert FSDPStrategy().configure_fsdp_auto_wrap_policy(tower()) is None
    policy = {Block}
    assert FSDPStrategy(auto_wrap_policy=policy).configure_fsdp_auto_wrap_policy(tower()) is policy

    class PerModel(FSDPStrategy):
        def configure_fsdp_auto_wrap_policy(self, module: nn.Module) -> Any:
            return {type(module[1])}

    # activation_checkpointing=True follows the overridden policy, so no auto_wrap_policy is needed
    assert PerModel(activation_checkpointing=True).configure_fsdp_auto_wrap_policy(tower()) == {Block}


def test_extra_keywords_go_to_fully_shard():
    strategy = FSDPStrategy(reshard_after_forward=False, shard_placement_fn=None)
    assert strategy._reshard_after_forward is False and strategy._fully_shard_kwargs == {
        "shard_placement_fn": None
    }
    assert FSDPStrategy(sharding_strategy="SHARD_GRAD_OP")._reshard_after_forward is False
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16)
    assert FSDPStrategy(mp_policy=policy).mp_policy is policy
    assert FSDPStrategy(offload_policy=CPUOffloadPolicy(pin_memory=False))._cpu_offload == CPUOffloadPolicy(
        pin_memory=False
    )


def test_a_function_in_model_parallels_first_position_is_named_as_the_accelerator_slot():
    with pytest.raises(TypeError, match=r"ModelParallelStrategy\(parallelize_fn=\.\.\.\)"):
        ModelParallelStrategy(identity)  # type: ignore[arg-type]


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
        ModelParallelStrategy(parallelize_fn=lambda m, mesh: m, tensor_parallel_size=0)
    strategy = ModelParallelStrategy(parallelize_fn=lambda m, mesh: m, data_parallel_size=3)
    with pytest.raises(ValueError, match="does not divide the 2 processes"):
        Fabric(accelerator="cpu", devices=2, strategy=strategy)


def identity(model: nn.Module, mesh: object) -> nn.Module:
    return model


def test_configured_strategies_survive_pickling_for_spawned_processes():
    policies = {"auto_wrap_policy": {Block}, "activation_checkpointing_policy": ModuleWrapPolicy({Block})}
    for strategy in (FSDPStrategy(**policies), ModelParallelStrategy(parallelize_fn=identity)):
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
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(IsADirectoryError, match=r"holds no checkpoint fabric knows"):
        load_checkpoint(None, tmp_path, {}, True, None, lambda o, s: nn.Linear(1, 1))  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        load_checkpoint(None, tmp_path / "missing", {}, True, None, lambda o, s: nn.Linear(1, 1))  # type: ignore[arg-type]


class Opaque:
    """A pickled object that weights_only loading refuses."""

    def __init__(self, value: int) -> None:
        self.value = value


def test_pickled_entries_of_a_dcp_checkpoint_are_loaded_safely_unless_trusted(tmp_path):
    import torch.distributed.checkpoint as dcp

    from fabric_core.io.dcp import load_sharded

    dcp.save({"step": 3, "numbers": [1, 2], "opaque": Opaque(7)}, checkpoint_id=tmp_path, no_dist=True)
    state = {"step": 0}
    with pytest.raises(ValueError, match="weights_only=False"):
        load_sharded(tmp_path, state, True, True, lambda o, s: nn.Linear(1, 1))
    remainder = load_sharded(tmp_path, state, True, False, lambda o, s: nn.Linear(1, 1))
    assert state["step"] == 3 and remainder["numbers"] == [1, 2] and remainder["opaque"].value == 7


def test_both_layouts_name_the_checkpoint_and_its_entries_when_a_strict_load_misses_one(tmp_path):
    import torch.distributed.checkpoint as dcp

    from fabric_core.strategies.strategy import Strategy

    dcp.save({"step": 3, "note": "hi"}, checkpoint_id=tmp_path / "sharded", no_dist=True)
    torch.save({"step": 3, "note": "hi"}, tmp_path / "full.pt")
    for path in (tmp_path / "sharded", tmp_path / "full.pt"):
        state = {"step": 0, "epoch": 1}
        with pytest.raises(KeyError, match=rf"'{path}' has no entry 'epoch' \(it holds: 'step', 'note'\)"):
            load_checkpoint(Strategy(), path, state, True, None, lambda o, s: nn.Linear(1, 1))  # type: ignore[arg-type]
        remainder = load_checkpoint(Strategy(), path, state, False, None, lambda o, s: nn.Linear(1, 1))  # type: ignore[arg-type]
        assert state == {"step": 3, "epoch": 1} and remainder == {"note": "hi"}
