"""Train a small classifier on scikit-learn's bundled handwritten digits (8x8 images).

The data ships inside scikit-learn, so nothing is downloaded. Run it on one CPU::

    python examples/train_digits.py

and on other hardware by changing the Fabric arguments only, e.g.
``--accelerator cuda --devices 2 --strategy ddp --precision bf16-mixed``, or under the
launcher, which then sets them: ``fabric run --devices 2 --strategy ddp examples/train_digits.py``.
Flags left out are left to Fabric (and so to ``fabric run``). The checkpoint is written
to ``checkpoints/digits-<strategy>``, so runs under different strategies do not collide.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fabric_core import Fabric, seed_everything


def build_data() -> tuple[TensorDataset, TensorDataset]:
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(labels), generator=generator)
    split = int(0.8 * len(labels))
    train, test = order[:split], order[split:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("accelerator", "strategy", "devices", "precision"):
        parser.add_argument(
            f"--{flag}", help=f"Fabric's {flag} (default: Fabric's, or what `fabric run` set)"
        )
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    chosen = {flag: getattr(args, flag) for flag in ("accelerator", "strategy", "devices", "precision")}
    fabric = Fabric(**{flag: value for flag, value in chosen.items() if value is not None})
    fabric.launch()
    seed_everything(42)

    train_set, test_set = build_data()
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=256)

    with fabric.init_module():
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model, optimizer = fabric.setup(model, optimizer, move_to_device=False)
    train_loader, test_loader = fabric.setup_dataloaders(train_loader, test_loader)

    for epoch in range(args.epochs):
        model.train()
        total, count = torch.zeros((), device=fabric.device), 0
        for images, labels in train_loader:
            loss = nn.functional.cross_entropy(model(images), labels)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            total += loss.detach() * len(labels)
            count += len(labels)
        train_loss = fabric.all_reduce(total / count)

        model.eval()
        correct = torch.zeros((), device=fabric.device)
        with torch.no_grad():
            for images, labels in test_loader:
                correct += (model(images).argmax(dim=1) == labels).sum()
        accuracy = fabric.all_reduce(correct, reduce_op="sum") / len(test_set)
        fabric.print(
            f"epoch {epoch:2d}  train loss {train_loss.item():.4f}  test accuracy {accuracy.item():.3f}"
        )

    path = f"checkpoints/digits-{type(fabric.strategy).__name__}"
    fabric.save(path, {"model": model, "optimizer": optimizer, "epoch": args.epochs})
    fabric.print(f"saved {path}")


if __name__ == "__main__":
    main()
