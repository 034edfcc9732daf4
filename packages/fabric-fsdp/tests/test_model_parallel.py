"""ModelParallelStrategy: tensor parallel on 2 processes and data x tensor on 4 match one process."""

from __future__ import annotations

import pytest
import torch
from conftest import SCRIPTS
from fsdp_common import run_script
from tp_train import LR, STEPS, make, reference, reference_run

from fabric_core import Fabric
from fabric_core.cli import main as fabric_cli


@pytest.mark.parametrize(
    ("devices", "data_parallel", "extra"),
    [(2, 1, []), (2, 1, ["--plan"]), (4, 2, ["--meta"])],
    ids=["tensor_parallel_2", "tensor_parallel_2_by_plan", "data_2_x_tensor_2_meta_init"],
)
def test_model_parallel_matches_one_process(tmp_path, devices, data_parallel, extra):
    run_script(str(SCRIPTS / "tp_train.py"), str(tmp_path), str(devices), str(data_parallel), *extra)
    expected = reference()
    trained = torch.load(tmp_path / "params.pt")
    assert trained.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(trained[name], value, rtol=0, atol=1e-5, msg=name)
    assert not torch.allclose(trained["up.weight"], make().state_dict()["up.weight"], atol=1e-3)

    if devices == 2:
        return
    # the sharded checkpoint of the 2-D (data x tensor) model consolidates into plain tensors
    output = tmp_path / "consolidated.pt"
    assert fabric_cli(["checkpoint", "consolidate", str(tmp_path / "checkpoint"), str(output)]) == 0
    checkpoint = torch.load(output, weights_only=True)
    assert checkpoint["steps"] == STEPS
    plain = make()
    plain.load_state_dict(checkpoint["model"])
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0, msg=name)

    # ... and loads on one device without any sharding: weights and Adam's moments as one process has them
    fabric = Fabric(accelerator="cpu", devices=1)
    net = make()
    net, opt = fabric.setup(net, torch.optim.Adam(net.parameters(), lr=LR))
    state = {"model": net, "optimizer": opt, "steps": 0}
    fabric.load(tmp_path / "checkpoint", state)
    assert state["steps"] == STEPS
    for name, value in net.state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0, msg=name)
    _, expected_opt = reference_run()
    loaded, wanted = opt.state_dict()["state"], expected_opt.state_dict()["state"]
    assert loaded.keys() == wanted.keys()
    for index, moments in wanted.items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(
                loaded[index][key], moments[key], rtol=0, atol=1e-5, msg=f"{index}.{key}"
            )
