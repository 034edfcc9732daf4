"""``xla_spmd`` on 2 virtual XLA:CPU devices (in a subprocess: the device count is fixed per process)."""

from __future__ import annotations

import pytest
import torch
from xla_helpers import assert_close_states, reference_run, run_script

from fabric_core import Fabric
from fabric_xla import XLASPMDStrategy


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spmd")
    return run_script("spmd_train.py", str(folder), env={"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "2"})


@pytest.mark.parametrize("mesh", ["fsdp", "data"])
def test_sharded_training_matches_the_cpu_reference(runs, mesh):
    expected, expected_losses = reference_run("adam")
    run = runs[mesh]
    assert run["losses"] == pytest.approx(expected_losses, rel=1e-4)
    assert_close_states({k: torch.tensor(v) for k, v in run["state"].items()}, expected)
    assert run["world_size"] == 1 and run["sampler"] is None
    assert run["reduced_number"] == ["xla", 3.0]
    assert run["gathered_number"] == [2]
    assert run["broadcast"] == {"epoch": 1}


def test_parameters_are_sharded_over_fsdp_and_batches_over_every_device(runs):
    # (16, 4) weight split by rows, (16,) bias, (3, 16) weight split by columns, (3,) bias.
    assert runs["fsdp"]["parameter_specs"] == [
        "{devices=[2,1]0,1}",
        "{devices=[2]0,1}",
        "{devices=[1,2]0,1}",
        "{devices=[2]0,1}",
    ]
    assert runs["fsdp"]["loaded_specs"] == runs["fsdp"]["parameter_specs"]
    assert runs["fsdp"]["batch_spec"] == runs["data"]["batch_spec"] == "{devices=[2,1]0,1}"
    # A (2, 1) mesh replicates the weights: the fsdp axis has one position.
    assert set(runs["data"]["parameter_specs"]) == {"{replicated}"}


@pytest.mark.parametrize("mesh", ["fsdp", "data"])
def test_checkpoints_hold_full_cpu_tensors_and_resume(runs, mesh):
    run = runs[mesh]
    assert run["saved_devices"] == ["cpu"]
    assert run["saved_matches"] is True
    assert run["resumed"] == pytest.approx(run["continued"], rel=1e-5)


def test_uneven_batches_warn_once(runs):
    assert len(runs["fsdp"]["uneven_warning"]) == 1
    assert "5 rows is split over 2 devices unevenly" in runs["fsdp"]["uneven_warning"][0]


def test_bad_meshes_and_device_counts_are_refused(monkeypatch):
    monkeypatch.setenv("CPU_NUM_DEVICES", "2")
    with pytest.raises(ValueError, match=r"mesh_shape=\(2, 2\) has 4 positions, but there are 2 devices"):
        Fabric(strategy=XLASPMDStrategy(mesh_shape=(2, 2)), devices=-1)
    with pytest.raises(ValueError, match=r"two positive integers"):
        XLASPMDStrategy(mesh_shape=(2, 0))
    with pytest.raises(
        ValueError, match=r"drives every XLA device of the host \(found 2\).*devices=2 or devices=-1"
    ):
        Fabric(strategy="xla_spmd", devices=1)
    with pytest.raises(ValueError, match=r"runs on one host.*strategy='xla'"):
        Fabric(strategy="xla_spmd", devices=-1, num_nodes=2)
