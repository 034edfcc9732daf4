"""Local SGD's own behaviour: replicas drift between averagings, agree after one, and match a plain simulation."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import torch
from fabric_localsgd import LocalSGDStrategy
from torch import nn

from fabric_core import Fabric
from fabric_core.strategies import STRATEGY_REGISTRY

WORLD_SIZE = 2
SYNC_EVERY = 3
STEPS = 5
LR = 0.1
MOMENTUM = 0.9


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 * rank + step)
    x = torch.randn(6, 4, generator=generator)
    return x, x.sum(dim=1, keepdim=True).sin()


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def train_replicas(fabric: Fabric, checkpoint: str) -> dict[str, torch.Tensor]:
    """Runs in each process: a few local steps, the replicas gathered after each, then a save."""
    model = make_model()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM))
    gathered = []
    for step in range(STEPS):
        x, y = batch(fabric.global_rank, step)
        fabric.backward(nn.functional.mse_loss(model(x), y))
        optimizer.step()
        optimizer.zero_grad()
        gathered.append(fabric.all_gather(flat(model)))
    before_save = fabric.all_gather(flat(model))
    fabric.save(checkpoint, {"model": model, "optimizer": optimizer})
    return {"gathered": torch.stack(gathered), "before_save": before_save}


def average(groups: Iterable[tuple[torch.Tensor, ...]]) -> None:
    """Replace the tensors of each group by their mean."""
    with torch.no_grad():
        for group in groups:
            mean = torch.stack(group).mean(0)
            for tensor in group:
                tensor.copy_(mean)


def simulate() -> list[torch.Tensor]:
    """Plain PyTorch: WORLD_SIZE replicas stepped one after the other, averaged every SYNC_EVERY steps."""
    replicas = [make_model() for _ in range(WORLD_SIZE)]
    optimizers = [torch.optim.SGD(r.parameters(), lr=LR, momentum=MOMENTUM) for r in replicas]
    history = []
    for step in range(STEPS):
        for rank, (replica, optimizer) in enumerate(zip(replicas, optimizers)):
            x, y = batch(rank, step)
            nn.functional.mse_loss(replica(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
        if (step + 1) % SYNC_EVERY == 0:
            average(zip(*(r.parameters() for r in replicas)))
            average(
                zip(
                    *(
                        [o.state[p]["momentum_buffer"] for p in r.parameters()]
                        for r, o in zip(replicas, optimizers)
                    )
                )
            )
        history.append(torch.stack([flat(r) for r in replicas]))
    return history


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    checkpoint = str(tmp_path_factory.mktemp("localsgd") / "checkpoint.pt")
    strategy = LocalSGDStrategy(sync_every=SYNC_EVERY, start_method="spawn")
    fabric = Fabric(accelerator="cpu", strategy=strategy, devices=WORLD_SIZE)
    result = fabric.launch(train_replicas, checkpoint)
    return {**result, "checkpoint": checkpoint}


def test_replicas_differ_between_averagings_and_agree_right_after_one(run: dict[str, object]) -> None:
    gathered = run["gathered"]
    for step in range(STEPS):
        agree = torch.equal(gathered[step][0], gathered[step][1])
        assert agree == ((step + 1) % SYNC_EVERY == 0), f"step {step + 1}"


def test_the_replicas_follow_a_plain_pytorch_simulation_of_local_sgd(run: dict[str, object]) -> None:
    for step, expected in enumerate(simulate()):
        torch.testing.assert_close(
            run["gathered"][step], expected, rtol=1e-5, atol=1e-6, msg=f"step {step + 1}"
        )


def test_a_checkpoint_holds_the_average_of_the_replicas(run: dict[str, object]) -> None:
    before = run["before_save"]
    assert not torch.equal(before[0], before[1]), "the save was meant to happen between two averagings"
    saved = torch.load(run["checkpoint"])["model"]
    model = make_model()
    model.load_state_dict(saved)
    torch.testing.assert_close(flat(model), before.mean(0), rtol=1e-6, atol=1e-7)


def test_the_plugin_registers_lazy_names_with_their_defaults() -> None:
    entry = STRATEGY_REGISTRY.entry("localsgd")
    assert (entry.provider, entry.target_path) == (
        "fabric-localsgd",
        "fabric_localsgd.strategy:LocalSGDStrategy",
    )
    assert dict(entry.init_params) == {"sync_every": 4, "start_method": "popen"}
    assert STRATEGY_REGISTRY.build("localsgd_fork", sync_every=2).sync_every == 2


@pytest.mark.parametrize("sync_every", [0, -1, 1.5, True])
def test_sync_every_must_be_a_positive_integer(sync_every: object) -> None:
    with pytest.raises(ValueError, match="must be a positive number of optimizer steps"):
        LocalSGDStrategy(sync_every=sync_every)  # type: ignore[arg-type]
