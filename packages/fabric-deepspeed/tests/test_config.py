"""Building the DeepSpeed config from arguments, Fabric's precision and a user config (no processes)."""

from __future__ import annotations

import inspect
import json
import logging
import math
from typing import Any

import pytest
import torch

from fabric_core import Fabric
from fabric_core.precision import MixedPrecision
from fabric_core.strategies import STRATEGY_REGISTRY
from fabric_deepspeed import DeepSpeedConfigError, DeepSpeedPrecision, DeepSpeedStrategy
from fabric_deepspeed._arguments import DeepSpeedArguments
from fabric_deepspeed._config import Setting, merge_settings, resolve_offload
from fabric_deepspeed.plugin import PRESETS


def fabric(strategy: object = "deepspeed", **kwargs: object) -> Fabric:
    return Fabric(accelerator="cpu", devices=2, strategy=strategy, **kwargs)  # type: ignore[arg-type]


def test_defaults_are_stage_2_without_clipping_and_with_a_batch_size():
    assert DeepSpeedStrategy().config == {
        "zero_optimization": {"stage": 2},
        "gradient_clipping": 0.0,
        "zero_allow_untested_optimizer": True,
        "train_micro_batch_size_per_gpu": 1,
    }


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_registered_and_builds_its_config(name):
    strategy = fabric(name).strategy
    assert isinstance(strategy, DeepSpeedStrategy)
    assert STRATEGY_REGISTRY.entry(name).provider == "fabric-deepspeed"
    zero = strategy.config["zero_optimization"]
    _, init_params = PRESETS[name]
    assert zero["stage"] == init_params.get("stage", 2)
    offload_device = init_params.get("offload_optimizer_device", "cpu")
    if init_params.get("offload_optimizer"):
        assert zero["offload_optimizer"]["device"] == offload_device
        assert zero["offload_optimizer"]["pin_memory"] is False
        assert strategy.config["zero_force_ds_cpu_optimizer"] is False
    else:
        assert "offload_optimizer" not in zero
    if init_params.get("offload_parameters"):
        assert zero["offload_param"]["device"] == init_params.get("offload_params_device", "cpu")
    if offload_device == "nvme":
        assert zero["offload_param"]["nvme_path"] == zero["offload_optimizer"]["nvme_path"] == "/local_nvme"


def test_a_user_config_fills_what_the_arguments_leave_open(tmp_path):
    user = {
        "zero_optimization": {"stage": 1, "reduce_bucket_size": 1000},
        "train_batch_size": 16,
        "gradient_clipping": 1.0,
    }
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(user))
    for config in (user, str(path), path):
        built = DeepSpeedStrategy(config=config).config
        assert built["zero_optimization"] == {"stage": 1, "reduce_bucket_size": 1000}
        assert built["gradient_clipping"] == 1.0
        assert "train_micro_batch_size_per_gpu" not in built  # DeepSpeed derives it from train_batch_size
    assert user["zero_optimization"] == {"stage": 1, "reduce_bucket_size": 1000}, (
        "the user's dict was changed"
    )


def test_an_argument_that_contradicts_the_config_names_both_values():
    with pytest.raises(DeepSpeedConfigError) as error:
        DeepSpeedStrategy(stage=3, config={"zero_optimization": {"stage": 2}})
    assert str(error.value) == (
        "DeepSpeedStrategy(stage=3) asks for zero_optimization.stage = 3, but the DeepSpeed config sets "
        "zero_optimization.stage = 2. Remove one of them or make them agree."
    )
    with pytest.raises(
        DeepSpeedConfigError, match=r"offload_optimizer=True\) asks for .*device = 'cpu'.*= 'none'"
    ):
        DeepSpeedStrategy(
            offload_optimizer=True, config={"zero_optimization": {"offload_optimizer": {"device": "none"}}}
        )
    with pytest.raises(DeepSpeedConfigError, match=r"reduce_bucket_size=5\) asks for .* = 5, but .* = 7"):
        DeepSpeedStrategy(reduce_bucket_size=5, config={"zero_optimization": {"reduce_bucket_size": 7}})
    # an argument equal to the config's value is no contradiction
    assert DeepSpeedStrategy(stage=1, config={"zero_optimization": {"stage": 1}}).zero_stage == 1


def test_a_precision_that_contradicts_the_config_names_both_values():
    strategy = DeepSpeedStrategy(config={"bf16": {"enabled": True}})
    with pytest.raises(DeepSpeedConfigError) as error:
        fabric(strategy, precision="32-true")
    assert "Fabric(precision='32-true') asks for bf16.enabled = False" in str(error.value)
    assert "the DeepSpeed config sets bf16.enabled = True" in str(error.value)


def test_the_config_chooses_the_precision_when_fabric_is_not_told():
    strategy = fabric(DeepSpeedStrategy(config={"bfloat16": {"enabled": True}})).strategy
    assert strategy.precision.precision == "bf16-mixed"
    assert strategy.config["bf16"] == {"enabled": True}


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_fabric_precision_enables_bf16(precision):
    strategy = fabric(precision=precision).strategy
    assert isinstance(strategy.precision, DeepSpeedPrecision) and strategy.precision.precision == precision
    assert strategy.config["bf16"] == {"enabled": True} and strategy.config["fp16"] == {"enabled": False}


def test_float16_on_the_cpu_is_refused_or_resolved_as_fabric_resolves_it():
    with pytest.raises(ValueError, match=r"needs a GPU.*Use precision='bf16-mixed' or '32-true' on the CPU"):
        fabric(precision="16-true")
    # Fabric resolves 16-mixed on a CPU to bf16-mixed (with a warning) before DeepSpeed sees it.
    with pytest.warns(UserWarning, match=r"runs as precision='bf16-mixed'"):
        strategy = fabric(precision="16-mixed").strategy
    assert strategy.precision.precision == "bf16-mixed" and strategy.config["bf16"] == {"enabled": True}


def test_a_config_that_enables_float16_on_the_cpu_is_refused():
    with pytest.raises(DeepSpeedConfigError, match=r"The DeepSpeed config asks for 16-mixed: .* needs a GPU"):
        fabric(DeepSpeedStrategy(config={"fp16": {"enabled": True}}))


def test_float16_builds_on_a_gpu_with_its_loss_scaling():
    strategy = DeepSpeedStrategy(
        loss_scale_window=500, precision_plugin=DeepSpeedPrecision("16-mixed", "cuda")
    )
    assert strategy.config["fp16"] == {"enabled": True, "loss_scale_window": 500}
    assert strategy.config["bf16"] == {"enabled": False}


def test_unsupported_precisions_and_plugins_are_refused():
    with pytest.raises(ValueError, match=r"DeepSpeed does not train in precision='64-true'"):
        fabric(precision="64-true")
    with pytest.raises(ValueError, match=r"own precision plugin"):
        fabric(plugins=[MixedPrecision("bfloat16")])
    with pytest.raises(DeepSpeedConfigError, match=r"tunes float16 loss scaling"):
        fabric(DeepSpeedStrategy(loss_scale=128))


def test_offload_details_without_offloading_are_refused():
    with pytest.raises(DeepSpeedConfigError, match=r"offload_optimizer_device='nvme'\) has no effect"):
        DeepSpeedStrategy(offload_optimizer_device="nvme")
    with pytest.raises(DeepSpeedConfigError, match=r"pin_memory=True\) has no effect: nothing is offloaded"):
        DeepSpeedStrategy(pin_memory=True)
    with pytest.raises(DeepSpeedConfigError, match=r"nvme_path='/x'\) has no effect"):
        DeepSpeedStrategy(offload_optimizer=True, nvme_path="/x")
    with pytest.raises(DeepSpeedConfigError, match=r"needs ZeRO stage 3, but the stage is 2"):
        DeepSpeedStrategy(offload_parameters=True)
    with pytest.raises(ValueError, match=r"only ZeRO stage 3 partitions"):
        DeepSpeedStrategy(remote_device="cpu")


def test_offload_follows_the_config_when_the_switch_is_not_given():
    user = {"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": "/disk"}}}
    zero = DeepSpeedStrategy(params_buffer_count=3, block_size=4096, config=user).config["zero_optimization"]
    assert zero["offload_param"] == {
        "device": "nvme",
        "nvme_path": "/disk",
        "buffer_count": 3,
        "pin_memory": False,
    }
    assert DeepSpeedStrategy(block_size=4096, config=user).config["aio"] == {"block_size": 4096}


def test_invalid_arguments_are_refused_before_anything_runs():
    with pytest.raises(
        TypeError, match=r"unexpected argument.*bucket_size.*Put any other DeepSpeed setting in config"
    ):
        DeepSpeedStrategy(bucket_size=1)
    with pytest.raises(ValueError, match=r"stage=4.* use 0, 1, 2 or 3"):
        DeepSpeedStrategy(stage=4)
    with pytest.raises(ValueError, match=r"must be 'cpu' or 'nvme'"):
        DeepSpeedStrategy(offload_optimizer=True, offload_optimizer_device="disk")
    with pytest.raises(ValueError, match=r"queue_depth=0.* positive integer"):
        DeepSpeedStrategy(queue_depth=0)
    with pytest.raises(TypeError, match=r"takes a DeepSpeedPrecision"):
        DeepSpeedStrategy(precision_plugin=MixedPrecision("bfloat16"))
    with pytest.raises(FileNotFoundError, match=r"no such file"):
        DeepSpeedStrategy(config="/does/not/exist.json")


def test_auto_values_are_filled_where_fabric_decides_and_refused_elsewhere():
    user = {
        "train_micro_batch_size_per_gpu": "auto",
        "zero_optimization": {"stage": "auto"},
        "bf16": {"enabled": "auto"},
    }
    strategy = fabric(DeepSpeedStrategy(config=user), precision="bf16-mixed").strategy
    assert strategy.config["train_micro_batch_size_per_gpu"] == 1
    assert strategy.zero_stage == 2 and strategy.config["bf16"] == {"enabled": True}
    with pytest.raises(DeepSpeedConfigError, match=r"'auto' at optimizer.params.lr"):
        fabric(DeepSpeedStrategy(config={"optimizer": {"type": "Adam", "params": {"lr": "auto"}}}))
    with pytest.raises(
        DeepSpeedConfigError, match=r"'auto' at bf16.enabled.*when Fabric\(precision=\.\.\.\) is given"
    ):
        fabric(DeepSpeedStrategy(config={"bf16": {"enabled": "auto"}}))


def test_configure_deepspeed_config_replaces_the_user_config_and_checks_it():
    strategy = fabric(DeepSpeedStrategy(stage=3)).strategy
    strategy.configure_deepspeed_config({"zero_optimization": {"stage": 3}, "bf16": {"enabled": True}})
    assert strategy.precision.precision == "bf16-mixed"
    with pytest.raises(DeepSpeedConfigError, match=r"DeepSpeedStrategy\(stage=3\)"):
        strategy.configure_deepspeed_config({"zero_optimization": {"stage": 1}})
    assert strategy.config["bf16"] == {"enabled": True}, "a refused config must leave the previous one"


def test_merge_keeps_the_user_value_over_a_default_but_not_over_an_argument():
    user = {"gradient_clipping": 2.0}
    assert merge_settings(user, [Setting(("gradient_clipping",), 0.0)]) == {"gradient_clipping": 2.0}
    with pytest.raises(
        DeepSpeedConfigError, match=r"X asks for gradient_clipping = 0.0, but the DeepSpeed config"
    ):
        merge_settings(user, [Setting(("gradient_clipping",), 0.0, "X")])
    with pytest.raises(DeepSpeedConfigError, match=r"zero_optimization = 3, but it must be a section"):
        merge_settings({"zero_optimization": 3}, [Setting(("zero_optimization", "stage"), 2)])


def test_explicitly_disabled_offload_is_checked_against_the_config():
    settings = resolve_offload(DeepSpeedArguments(offload_optimizer=False), {})
    assert settings == [
        Setting(
            ("zero_optimization", "offload_optimizer", "device"),
            "none",
            "DeepSpeedStrategy(offload_optimizer=False)",
        )
    ]


# -- the seed's signature ---------------------------------------------------------------

SEED_SIGNATURE = [
    ("stage", 2),
    ("remote_device", None),
    ("offload_optimizer", False),
    ("offload_parameters", False),
    ("offload_params_device", "cpu"),
    ("nvme_path", None),
    ("params_buffer_count", 5),
    ("params_buffer_size", 100_000_000),
    ("max_in_cpu", 1_000_000_000),
    ("offload_optimizer_device", "cpu"),
    ("optimizer_buffer_count", 4),
    ("block_size", 1048576),
    ("queue_depth", 8),
    ("single_submit", False),
    ("overlap_events", True),
    ("thread_count", 1),
    ("config", None),
    ("logging_level", logging.WARN),
    ("parallel_devices", None),
    ("cluster_environment", None),
    ("checkpoint_io", None),
    ("precision_plugin", None),
    ("process_group_backend", None),
    ("timeout", None),
]
"""``DeepSpeedStrategy.__init__`` as the seed writes it (before ``**kwargs``)."""


def test_the_constructor_has_the_seeds_parameters_order_and_defaults_then_keyword_only_extras():
    parameters = list(inspect.signature(DeepSpeedStrategy.__init__).parameters.values())[1:]
    positional = [p for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == SEED_SIGNATURE
    assert parameters[-1].kind is inspect.Parameter.VAR_KEYWORD
    extras = [p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert {p.name for p in extras} == {"accelerator", "precision"}
    assert DeepSpeedStrategy.allows_repeated_setup is False


def test_passing_the_documented_defaults_changes_nothing():
    defaults = dict(SEED_SIGNATURE)
    by_keyword = DeepSpeedStrategy(**defaults)
    by_position = DeepSpeedStrategy(*defaults.values())
    assert by_keyword.config == by_position.config == DeepSpeedStrategy().config
    # the two of issue 10, which used to raise "has no effect"
    assert DeepSpeedStrategy(offload_optimizer_device="cpu", optimizer_buffer_count=4).config == (
        DeepSpeedStrategy().config
    )
    # a default does not contradict the config: the seed's config snippet keeps its stage 3
    seed_config = {
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": {"device": "cpu"},
            "offload_param": {"device": "cpu"},
        },
        "train_micro_batch_size_per_gpu": 1,
    }
    for strategy in (
        DeepSpeedStrategy(config=seed_config),
        DeepSpeedStrategy(**{**defaults, "config": seed_config}),
    ):
        assert strategy.zero_stage == 3
        assert strategy.config["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": False}


def test_a_non_default_detail_without_effect_is_still_refused():
    with pytest.raises(DeepSpeedConfigError, match=r"optimizer_buffer_count=3\) has no effect"):
        DeepSpeedStrategy(optimizer_buffer_count=3)
    with pytest.raises(DeepSpeedConfigError, match=r"offload_params_device='nvme'\) has no effect"):
        DeepSpeedStrategy(stage=3, offload_params_device="nvme")
    # a value of another type than the default is checked as given
    with pytest.raises(ValueError, match=r"single_submit=0\) must be True or False"):
        DeepSpeedStrategy(single_submit=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"stage=2.0.* use 0, 1, 2 or 3"):
        DeepSpeedStrategy(stage=2.0)  # type: ignore[arg-type]


def test_precision_is_the_keyword_only_alias_of_precision_plugin():
    plugin = DeepSpeedPrecision("bf16-mixed")
    assert DeepSpeedStrategy(precision=plugin).config["bf16"] == {"enabled": True}
    with pytest.raises(ValueError, match=r"same argument under two names"):
        DeepSpeedStrategy(precision_plugin=plugin, precision=plugin)


def test_configure_deepspeed_config_returns_the_completed_config():
    strategy = DeepSpeedStrategy()
    returned = strategy.configure_deepspeed_config(
        {"zero_optimization": {"stage": 1}, "gradient_clipping": 2.0}
    )
    assert (
        returned
        == strategy.config
        == {
            "zero_optimization": {"stage": 1},
            "gradient_clipping": 2.0,
            "zero_allow_untested_optimizer": True,
            "train_micro_batch_size_per_gpu": 1,
        }
    )
    returned["gradient_clipping"] = 3.0
    assert strategy.config["gradient_clipping"] == 2.0, "the returned dict is a copy"


def test_clipping_arguments_deepspeed_cannot_honour_are_refused_in_words():
    strategy = DeepSpeedStrategy()
    module = torch.nn.Linear(1, 1)
    optimizer: Any = object()  # not set up (a real torch optimizer costs torch's first-use import, seconds)
    with pytest.raises(ValueError, match=r"norm_type=inf.*L2 norm of the gradients only"):
        strategy.clip_gradients_norm(module, optimizer, 1.0, norm_type=math.inf)
    with pytest.raises(RuntimeError, match=r"not set up by this DeepSpeed strategy"):
        strategy.clip_gradients_norm(module, optimizer, 1.0)
    with pytest.raises(RuntimeError, match=r"not set up by this DeepSpeed strategy"):
        strategy.clip_gradients_value(module, optimizer, 1.0)
