"""``xla`` with one device: the loop, the XLA collectives at world size 1, launching and checkpoints."""

from __future__ import annotations

import pytest
import torch
from xla_helpers import assert_close_states, cpu_state, make_model, make_optimizer, reference_run, train

from fabric_core import Fabric
from fabric_xla import XLAEnvironment, XLAStrategy


@pytest.fixture
def fabric() -> Fabric:
    fabric = Fabric(strategy="xla", devices=1)
    fabric.launch()
    return fabric


def test_training_through_launch_matches_the_cpu_reference():
    expected, expected_losses = reference_run("adam")

    def run(fabric: Fabric) -> tuple[list[float], dict[str, torch.Tensor]]:
        model = make_model()
        model, optimizer = fabric.setup(model, make_optimizer(model, "adam"))
        return train(fabric, model, optimizer), cpu_state(model)

    fabric = Fabric(strategy=XLAStrategy(), devices=1)
    losses, state = fabric.launch(run)
    assert losses == pytest.approx(expected_losses, rel=1e-4)
    assert_close_states(state, expected)
    assert isinstance(fabric.strategy.cluster_environment, XLAEnvironment)
    assert (fabric.world_size, fabric.global_rank, fabric.local_rank, fabric.node_rank) == (1, 0, 0, 0)
    assert fabric.strategy.distributed_sampler_kwargs == {"num_replicas": 1, "rank": 0}


def test_gradient_clipping_and_accumulation_match_plain_pytorch(fabric):
    reference = make_model()
    reference_optimizer = make_optimizer(reference)
    model = make_model()
    model, optimizer = fabric.setup(model, make_optimizer(model))
    batches = [torch.randn(4, 4) for _ in range(4)]
    for step in range(2):
        for micro in batches[2 * step : 2 * step + 2]:
            reference(micro).pow(2).mean().backward()
            with fabric.no_backward_sync(model, enabled=micro is batches[2 * step]):
                fabric.backward(model(fabric.to_device(micro)).pow(2).mean())
        expected_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.05)
        norm = fabric.clip_gradients(model, optimizer, max_norm=0.05)
        torch.testing.assert_close(norm.cpu(), expected_norm, rtol=1e-4, atol=1e-6)
        reference_optimizer.step()
        reference_optimizer.zero_grad()
        optimizer.step()
        optimizer.zero_grad()
    assert_close_states(cpu_state(model), cpu_state(reference))


@pytest.mark.parametrize(
    ("reduce_op", "expected"),
    [
        ("sum", [1.0, 2.0]),
        ("mean", [1.0, 2.0]),
        ("max", [1.0, 2.0]),
        ("min", [1.0, 2.0]),
        ("product", [1.0, 2.0]),
    ],
)
def test_reduce_runs_an_xla_all_reduce(fabric, reduce_op, expected):
    result = fabric.strategy.reduce(torch.tensor([1.0, 2.0]), reduce_op=reduce_op)
    assert result.device.type == "cpu"  # the strategy hands the result back where the tensor was
    assert result.tolist() == expected
    assert fabric.all_reduce(torch.tensor([1.0, 2.0]), reduce_op=reduce_op).cpu().tolist() == expected
    on_device = fabric.all_reduce(torch.tensor([3, 4], device=fabric.device), reduce_op="mean")
    assert on_device.device.type == "xla"
    assert on_device.dtype == torch.float32
    assert on_device.cpu().tolist() == [3.0, 4.0]
    assert fabric.all_reduce({"loss": torch.tensor(2.0)}, reduce_op=reduce_op)["loss"].item() == 2.0


def test_reduce_and_all_gather_take_the_seeds_call_forms_and_communicate_numbers(fabric):
    strategy = fabric.strategy
    assert strategy.reduce(torch.tensor([2.0, 4.0]), None, None).tolist() == [2.0, 4.0]  # None is "mean"
    assert strategy.reduce(torch.tensor(3), group=None, reduce_op=None).dtype == torch.float32
    for number, reduce_op in ((3.0, None), (3, "sum"), (2.5, "max")):
        reduced = strategy.reduce(number, reduce_op=reduce_op)
        assert isinstance(reduced, torch.Tensor) and reduced.device.type == "xla"
        assert reduced.item() == number
    gathered = strategy.all_gather(2.0)
    assert isinstance(gathered, torch.Tensor) and gathered.device.type == "xla"
    assert gathered.cpu().tolist() == [2.0]
    assert strategy.all_gather(torch.tensor([1, 2]), None).tolist() == [[1, 2]]
    assert fabric.all_reduce(1.5).item() == 1.5
    nested = fabric.all_reduce({"loss": 0.5, "counts": [2, torch.tensor(4.0)]}, reduce_op="sum")
    assert nested["loss"].item() == 0.5 and [c.item() for c in nested["counts"]] == [2, 4.0]
    with pytest.raises(TypeError, match=r"XLAStrategy.reduce\(\) communicates tensors and numbers, got str"):
        strategy.reduce("loss")
    with pytest.raises(TypeError, match=r"XLAStrategy.all_gather\(\) communicates tensors and numbers"):
        strategy.all_gather(None)  # type: ignore[arg-type]


def test_numbers_before_launch_become_cpu_tensors():
    strategy = XLAStrategy()
    assert strategy.reduce(2.0).device.type == "cpu" and strategy.reduce(2.0).item() == 2.0
    assert strategy.all_gather(7).tolist() == [7]


def test_reduce_refuses_unknown_operations(fabric):
    with pytest.raises(ValueError, match=r"reduce_op='median' is not supported; use one of: sum, mean"):
        fabric.all_reduce(torch.tensor(1.0), reduce_op="median")


def test_all_gather_adds_a_world_size_dimension_and_passes_gradients(fabric):
    gathered = fabric.all_gather({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor(3.0)})
    assert gathered["a"].shape == (1, 2) and gathered["b"].shape == (1,)
    assert gathered["a"].tolist() == [[1.0, 2.0]]
    leaf = torch.tensor([1.0, 2.0], device=fabric.device, requires_grad=True)
    (fabric.all_gather(leaf * 3, sync_grads=True) ** 2).sum().backward()
    assert leaf.grad.cpu().tolist() == [18.0, 36.0]
    with pytest.raises(ValueError, match=r"drop group="):
        fabric.strategy.all_gather(leaf, group=[[0]], sync_grads=True)


def test_broadcast_sends_tensors_and_objects_and_barrier_returns(fabric):
    tensor = torch.tensor([5.0, 6.0])
    sent = fabric.broadcast(tensor)
    assert sent.device.type == "cpu" and sent.tolist() == [5.0, 6.0]
    assert fabric.broadcast({"epoch": 3, "names": ["a", "b"]}) == {"epoch": 3, "names": ["a", "b"]}
    assert fabric.broadcast(torch.tensor(7)).item() == 7
    fabric.barrier("test")
    assert fabric.strategy.reduce_boolean_decision(True) is True
    assert fabric.strategy.reduce_boolean_decision(False, all=False) is False


def test_checkpoint_round_trip_and_interchange_with_single_device(tmp_path, fabric):
    model = make_model()
    model, optimizer = fabric.setup(model, make_optimizer(model, "adam"))
    train(fabric, model, optimizer, steps=2)
    fabric.save(tmp_path / "xla.pt", {"model": model, "optimizer": optimizer, "epoch": 1})
    raw = torch.load(tmp_path / "xla.pt")
    assert {t.device.type for t in raw["model"].values()} == {"cpu"}

    plain = make_model()
    plain.load_state_dict(raw["model"])
    assert_close_states(cpu_state(plain), cpu_state(model), atol=0)

    single = Fabric(strategy="single_xla")
    other = make_model()
    other, other_optimizer = single.setup(other, make_optimizer(other, "adam"))
    remainder = single.load(tmp_path / "xla.pt", {"model": other, "optimizer": other_optimizer})
    assert remainder == {"epoch": 1}
    assert train(single, other, other_optimizer, steps=2) == pytest.approx(
        train(fabric, model, optimizer, steps=2)
    )


def test_debug_sets_the_xla_debug_level_until_teardown(monkeypatch):
    monkeypatch.delenv("PT_XLA_DEBUG_LEVEL", raising=False)
    fabric = Fabric(strategy=XLAStrategy(debug=True), devices=1)
    fabric.launch()
    import os

    assert os.environ["PT_XLA_DEBUG_LEVEL"] == "2"
    fabric.strategy.teardown()
    assert "PT_XLA_DEBUG_LEVEL" not in os.environ


def test_errors_say_what_to_pass_instead(monkeypatch):
    monkeypatch.setenv("CPU_NUM_DEVICES", "2")
    with pytest.raises(ValueError, match=r"cannot pick xla:1.*strategy='single_xla', devices=\[1\]"):
        Fabric(strategy="xla", devices=[1])
    with pytest.raises(ValueError, match=r"precision='16-true'"):
        Fabric(strategy="xla", devices=1, precision="16-true")
    with pytest.raises(ValueError, match=r"start_method='forkserver' is not one torch_xla.launch offers"):
        XLAStrategy(start_method="forkserver")  # type: ignore[arg-type]
    from fabric_core.precision.precision import Precision

    with pytest.raises(ValueError, match="same argument under two names"):
        XLAStrategy(precision=Precision(), precision_plugin=Precision())
