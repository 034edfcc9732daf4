"""Activation checkpointing -> regional compile -> fully_shard, per block: one 2-process launch, then unit checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from blocks_train import Block, model
from conftest import SCRIPTS
from fsdp_common import run_script
from torch import nn

import fabric_fsdp
from fabric_fsdp import FSDPStrategy, ModelParallelStrategy
from fabric_fsdp._blocks import check_selects, is_checkpointed, is_compiled, keeps_whole_model_compile

TOLERANCE = 2e-4
CONFIGS = ["eager_checkpointed", "compiled", "checkpointed_compiled", "model_parallel", "whole_model_compile"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launch runs every configuration (a launch costs seconds; a configuration with aot_eager, less)."""
    out_dir = tmp_path_factory.mktemp("blocks")
    run_script(str(SCRIPTS / "blocks_train.py"), str(out_dir))
    return out_dir


@pytest.fixture(scope="module")
def facts(trained: Path) -> dict[str, Any]:
    return json.loads((trained / "facts.json").read_text())


@pytest.mark.parametrize("config", CONFIGS)
def test_losses_equal_eager_fsdp_and_one_process(facts, config):
    losses = torch.tensor(facts[config]["losses"])
    torch.testing.assert_close(losses, torch.tensor(facts["eager"]["losses"]), rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(losses, torch.tensor(facts["reference"]), rtol=0, atol=TOLERANCE)
    assert losses[-1] != losses[0], "nothing was trained"


def test_checkpointed_blocks_run_forward_again_in_backward(facts):
    assert facts["eager"]["forward_calls_per_step"] == 2  # two blocks
    assert facts["eager_checkpointed"]["forward_calls_per_step"] == 4  # and their recomputation
    assert facts["eager_checkpointed"]["checkpointed"] == [True, True]


def test_compiled_checkpointed_blocks_keep_less_for_backward(facts):
    compiled, both = facts["compiled"], facts["checkpointed_compiled"]
    assert compiled["compiled"] == both["compiled"] == [True, True]
    assert both["checkpointed"] == [True, True] and compiled["checkpointed"] == [False, False]
    # the blocks share one forward graph; with checkpointing it returns fewer elements for backward
    assert len(compiled["saved_elements"]) == len(both["saved_elements"]) == 1
    assert both["saved_elements"][0] < compiled["saved_elements"][0]
    assert both["forward_calls_per_step"] == 0  # the Python forward ran only while tracing


@pytest.mark.parametrize("config", ["compiled", "checkpointed_compiled", "model_parallel"])
def test_no_recompiles_after_the_first_step(facts, config):
    graphs = facts[config]["unique_graphs_per_step"]
    assert graphs[0] >= 1 and len(set(graphs)) == 1, graphs


def test_model_parallel_default_plan_checkpoints_and_compiles_each_block(facts):
    assert facts["model_parallel"]["checkpointed"] == [True, True]
    assert facts["model_parallel"]["compiled"] == [True, True]


def test_whole_model_compile_gives_way_to_block_compile_once(facts):
    run = facts["whole_model_compile"]
    assert len(run["warnings"]) == 1 and "whole-model compile is dropped" in run["warnings"][0]
    assert run["called"] == "FSDPSequential"  # no OptimizedModule around the sharded model
    assert run["compiled"] == [True, True] and run["checkpointed"] == [True, True]


def test_checkpoint_of_a_checkpointed_compiled_run_loads_into_the_plain_model(trained):
    state = torch.load(trained / "model.pt", weights_only=True)["model"]
    plain = model()
    assert set(state) == set(plain.state_dict())
    plain.load_state_dict(state, strict=True)
    assert not torch.equal(plain[0].weight, model()[0].weight), "the trained weights were saved"


# -- one process: options and the helper -------------------------------------------------


def test_compile_blocks_values_are_checked():
    with pytest.raises(TypeError, match=r"compile_blocks='yes'\) must be True, False, or a dict"):
        FSDPStrategy(auto_wrap_policy={Block}, compile_blocks="yes")
    with pytest.raises(
        TypeError, match=r"bogus is not a parameter of torch.compile\.\ntorch.compile takes: .*backend"
    ):
        FSDPStrategy(auto_wrap_policy={Block}, compile_blocks={"backend": "eager", "bogus": 1})
    with pytest.raises(
        ValueError, match=r"compile_blocks=\.\.\.\) compiles each module auto_wrap_policy selects"
    ):
        FSDPStrategy(compile_blocks=True)
    assert "compile_blocks={'mode': 'max-autotune'}" in repr(
        FSDPStrategy(auto_wrap_policy={Block}, compile_blocks={"mode": "max-autotune"})
    )


def test_model_parallel_block_options_are_checked():
    with pytest.raises(TypeError, match=r"ModelParallelStrategy\(compile_blocks='yes'\)"):
        ModelParallelStrategy(compile_blocks="yes")
    with pytest.raises(TypeError, match=r"activation_checkpointing='all'\) must be True"):
        ModelParallelStrategy(activation_checkpointing="all")
    with pytest.raises(ValueError, match=r"Call fabric_fsdp.prepare_blocks\(model, Block"):
        ModelParallelStrategy(parallelize_fn=lambda m, mesh: m, compile_blocks=True)
    ModelParallelStrategy(activation_checkpointing={Block}, compile_blocks={"backend": "eager"})


def test_a_policy_that_selects_nothing_names_the_layer_classes():
    with pytest.raises(ValueError, match=r"selects no module of Sequential.*Block, LayerNorm, Linear"):
        check_selects(model(), [], "activation_checkpointing", "FSDPStrategy")
    with pytest.raises(ValueError, match=r"prepare_blocks\(blocks=\.\.\.\) selects no module"):
        fabric_fsdp.prepare_blocks(model(), nn.Conv2d)
    with pytest.raises(ValueError, match=r"got Linear, which is not a module of Sequential"):
        fabric_fsdp.prepare_blocks(model(), Block, checkpoint=[nn.Linear(2, 2)])


def test_whole_model_compile_is_kept_without_compile_blocks():
    assert keeps_whole_model_compile(None, "FSDPStrategy")
    assert FSDPStrategy().keep_whole_model_compile(nn.Linear(1, 1))


def test_prepare_blocks_checkpoints_then_compiles_in_place_keeping_names():
    plain, net = model(), model()
    blocks = fabric_fsdp.prepare_blocks(net, Block, checkpoint=True, compile={"backend": "aot_eager"})
    assert blocks == [net[1], net[2]]
    assert all(is_checkpointed(b) and is_compiled(b) for b in blocks)
    assert [name for name, _ in net.named_parameters()] == [name for name, _ in plain.named_parameters()]
    x = torch.randn(4, 8)
    for module in (plain, net):
        module(x).square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-6, msg=name)
    fabric_fsdp.prepare_blocks(net, Block, checkpoint=True)  # applying it again is a no-op
    assert all(is_checkpointed(b) for b in blocks)
