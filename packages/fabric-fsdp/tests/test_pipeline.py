"""N-D layouts equal one process: pipeline 2; pipeline 2 x data 2; HSDP 2 x 2; pipeline x data x tensor 2 x 2 x 2.

The 8-process layout runs oversubscribed on a 2-core machine (one thread per process).

The loop (scripts/pp_train.py) is a plain Fabric loop written with
``fabric.forward_backward``; it clips by the norm of the whole model (over both stages)
and steps a ``LambdaLR``. Its checkpoint (DCP, each stage writing its own parameters)
loads on one device without any pipeline.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SCRIPTS
from fsdp_common import run_script
from pp_train import LR, SPLIT, STEPS, make, reference
from torch import nn

from fabric_core import Fabric
from fabric_fsdp import ModelParallelStrategy
from fabric_fsdp._pipeline import keep_stage

MATCHES_ONE_PROCESS = 2e-4


@pytest.mark.parametrize(
    ("devices", "data_parallel", "schedule", "replicas", "tensor"),
    [(2, 1, "1F1B", 1, 1), (4, 2, "GPipe", 1, 1), (4, 4, "none", 2, 1), (8, 2, "1F1B", 1, 2)],
    ids=[
        "pipeline_2_1f1b",
        "pipeline_2_x_data_2_gpipe",
        "data_replicate_2_x_data_shard_2",
        "pipeline_2_x_data_2_x_tensor_2_oversubscribed",
    ],
)
def test_the_layout_matches_one_process_and_its_checkpoint_loads_on_one_device(
    tmp_path, devices, data_parallel, schedule, replicas, tensor
):
    layout = (str(devices), str(data_parallel), schedule, str(replicas), str(tensor))
    run_script(str(SCRIPTS / "pp_train.py"), str(tmp_path), *layout)
    record = json.loads((tmp_path / "record.json").read_text())
    expected, parameters = reference()
    for key in ("losses", "norms"):
        torch.testing.assert_close(record[key], expected[key], rtol=MATCHES_ONE_PROCESS, atol=0, msg=key)
    assert max(expected["norms"]) > 0.5  # clipping bites

    fabric = Fabric(accelerator="cpu", devices=1)
    net = make()
    net, opt = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9))
    state = {"model": net, "optimizer": opt, "steps": 0}
    fabric.load(tmp_path / "checkpoint", state)
    assert state["steps"] == STEPS
    for name, value in parameters.items():
        torch.testing.assert_close(net.state_dict()[name], value, rtol=0, atol=1e-5, msg=name)
    momenta = opt.state_dict()["state"]
    assert sorted(momenta) == list(range(6)) and all("momentum_buffer" in m for m in momenta.values())


def test_forward_backward_is_the_plain_step_without_a_pipeline():
    fabric = Fabric(accelerator="cpu", devices=1)
    net = make()
    twin = make()
    net = fabric.setup(net)
    x, y = torch.randn(4, 8), torch.randn(4, 1)
    loss = fabric.forward_backward(net, x, target=y, loss_fn=nn.functional.mse_loss)
    expected = nn.functional.mse_loss(twin(x), y)
    expected.backward()
    assert not loss.requires_grad and torch.equal(loss, expected.detach())
    for mine, theirs in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=0, atol=0)
    with pytest.raises(TypeError, match="needs a function"):
        fabric.forward_backward(net, x, target=y, loss_fn="mse")


def test_a_stage_keeps_its_modules_under_their_own_names():
    model = nn.Sequential(
        nn.Linear(2, 2), nn.ModuleList([nn.Linear(2, 2) for _ in range(4)]), nn.Linear(2, 1)
    )
    stage = keep_stage(model, 1, 3, ["1.2", "2"])
    assert sorted(stage.state_dict()) == ["1.2.bias", "1.2.weight", "1.3.bias", "1.3.weight"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pipeline_parallel_size": 0}, "pipeline_parallel_size=0"),
        ({"pipeline_parallel_size": 2}, "needs pipeline_split"),
        ({"pipeline_parallel_size": 3, "pipeline_split": ["2"]}, "3 stages need 2 split points"),
        ({"pipeline_split": ["2"]}, "without a pipeline"),
        ({"pipeline_parallel_size": 2, "pipeline_split": "2"}, "list of module names"),
        ({"pipeline_parallel_size": 2, "pipeline_split": SPLIT, "pipeline_schedule": "zb"}, "choose one of"),
        (
            {"pipeline_parallel_size": 2, "pipeline_split": SPLIT, "pipeline_microbatches": 0},
            "microbatches=0",
        ),
    ],
)
def test_pipeline_options_that_cannot_work_get_one_message(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ModelParallelStrategy(**kwargs)


def test_a_pipeline_that_does_not_divide_the_processes_is_refused_before_launch():
    strategy = ModelParallelStrategy(pipeline_parallel_size=2, pipeline_split=SPLIT)
    with pytest.raises(ValueError, match="does not divide the 3 processes"):
        Fabric(accelerator="cpu", devices=3, strategy=strategy)


@pytest.mark.parametrize(
    ("split", "message"),
    [(["9"], "not a module of the model's sequence"), (["3", "2"], "in the order they run")],
)
def test_split_points_that_name_no_module_or_run_backwards_are_refused(split, message):
    with pytest.raises(ValueError, match=message):
        keep_stage(make(), 0, len(split) + 1, split)
