"""What a user's type checker sees in a loop through Fabric: checked by mypy in `nox -s typecheck`.

Not a test module (pytest does not collect it); mypy fails the session when a revealed
type changes. Running it also works: it trains one step on a CPU.
"""

from __future__ import annotations

from typing import assert_type

import torch
from torch.utils.data import DataLoader, TensorDataset

from fabric_core import Fabric
from fabric_core.wrappers import FabricDataLoader, FabricModule, FabricOptimizer

fabric = Fabric(accelerator="cpu", devices=1)
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
data = DataLoader(TensorDataset(torch.randn(8, 4), torch.randn(8, 1)), batch_size=4)

assert_type(fabric.setup(torch.nn.Linear(4, 1)), FabricModule)
wrapped, wrapped_optimizer, same_scheduler = fabric.setup(model, optimizer, scheduler=scheduler)
assert_type(wrapped, FabricModule)
assert_type(wrapped_optimizer, FabricOptimizer)
assert_type(same_scheduler, torch.optim.lr_scheduler.StepLR)
loader = fabric.setup_dataloaders(data)
assert_type(loader, FabricDataLoader)
assert_type(fabric.setup_dataloaders(data, data), tuple[FabricDataLoader, ...])
assert_type(fabric.device, torch.device)

for inputs, targets in loader:
    loss = torch.nn.functional.mse_loss(wrapped(inputs), targets)
    fabric.backward(loss)
    wrapped_optimizer.step()
    wrapped_optimizer.zero_grad()
    same_scheduler.step()
    assert wrapped.weight.shape == (1, 4)  # attributes of the wrapped model are reachable
