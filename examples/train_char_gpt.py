"""Train a small character-level GPT on a text that ships with Python, under any strategy.

The text is the help of Python itself (the ``pydoc_data`` package of the standard
library, about 460 000 characters), so nothing is downloaded. On one CPU::

    python examples/train_char_gpt.py --steps 200

on 2 CPU processes with FSDP (the README's main job), or any other strategy by changing
the one flag::

    python -m fabric_core run --accelerator cpu --devices 2 --strategy fsdp examples/train_char_gpt.py
    python -m fabric_core run --accelerator cpu --devices 2 --strategy ddp examples/train_char_gpt.py
    DS_ACCELERATOR=cpu python -m fabric_core run --accelerator cpu --devices 2 \\
        --strategy deepspeed_stage_2 examples/train_char_gpt.py

(``fabric run`` is the same command as ``python -m fabric_core run``.) The loop uses
gradient accumulation with ``fabric.no_backward_sync``, gradient clipping, a warm-up and
cosine learning-rate schedule, and a checkpoint that ``--resume`` continues from, under
the same or another strategy. Rank 0 shows a progress bar (loss, tokens/s, ETA) when
tqdm is installed, and writes ``metrics.csv``, the hyperparameters, ``curves.png`` (with
matplotlib) and the checkpoint into one folder per run, named at the end:
``runs/char-gpt/<strategy>/version_<N>``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from pydoc_data.topics import topics

import torch
from torch import nn
from torch.nn import functional

from fabric_core import Fabric, seed_everything
from fabric_core.loggers import CSVLogger
from fabric_core.utilities import ThroughputMonitor


@dataclass
class Settings:
    """What a run trains: the model's shape and the optimisation."""

    steps: int = 200
    batch_size: int = 16
    accumulate: int = 2
    context: int = 64
    width: int = 64
    layers: int = 2
    heads: int = 4
    lr: float = 3e-3
    warmup: int = 20
    max_norm: float = 1.0
    eval_every: int = 50


class CharText:
    """The help topics of Python as one string, encoded one byte-sized id per character."""

    def __init__(self) -> None:
        text = "\n\n".join(topics[name] for name in sorted(topics))
        self.alphabet = sorted(set(text))
        index = {char: i for i, char in enumerate(self.alphabet)}
        ids = torch.tensor([index[char] for char in text], dtype=torch.long)
        split = int(0.95 * len(ids))
        self.train, self.validation = ids[:split], ids[split:]

    def batch(self, part: torch.Tensor, size: int, context: int, generator: torch.Generator) -> torch.Tensor:
        """``size`` random windows of ``context + 1`` characters (inputs and shifted targets)."""
        starts = torch.randint(len(part) - context - 1, (size,), generator=generator)
        return torch.stack([part[start : start + context + 1] for start in starts.tolist()])


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a 4x MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.projection = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attended = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.projection(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.mlp_norm(x))


class CharGPT(nn.Module):
    """A small GPT over characters: token and position embeddings, blocks, a linear head."""

    def __init__(self, vocabulary: int, settings: Settings) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, settings.width)
        self.positions = nn.Embedding(settings.context, settings.width)
        self.blocks = nn.ModuleList(Block(settings.width, settings.heads) for _ in range(settings.layers))
        self.norm = nn.LayerNorm(settings.width)
        self.head = nn.Linear(settings.width, vocabulary)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.tokens(ids) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        # One row of logits per position, (batch * length, vocabulary): a 2-D input keeps the
        # head's output a tensor of its own rather than a view (which FSDP2 warns about).
        return self.head(self.norm(x).flatten(0, 1))


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return functional.cross_entropy(logits, targets.flatten())


def learning_rate_factor(step: int, settings: Settings) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


def progress_bar(fabric: Fabric, total: int, initial: int):
    """A tqdm bar on rank 0 when tqdm is installed; ``None`` elsewhere (the loop then prints)."""
    if not fabric.is_global_zero:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        fabric.print("(pip install tqdm for a progress bar; printing every evaluation instead)")
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def plot_curves(metrics_csv: Path, output: Path) -> bool:
    """Draw training and validation loss and tokens/s over steps; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return False
    columns: dict[str, list[tuple[int, float]]] = {}
    with metrics_csv.open() as file:
        for row in csv.DictReader(file):
            for name, value in row.items():
                if name != "step" and value:
                    columns.setdefault(name, []).append((int(row["step"]), float(value)))
    figure, (loss_axis, speed_axis) = pyplot.subplots(1, 2, figsize=(10, 3.8))
    for name in ("train/loss", "val/loss"):
        if name in columns:
            loss_axis.plot(*zip(*columns[name]), label=name)
    loss_axis.set(xlabel="step", ylabel="cross-entropy (nats/char)", title="loss")
    loss_axis.legend()
    if "tokens_per_sec" in columns:
        speed_axis.plot(*zip(*columns["tokens_per_sec"]), color="tab:green")
    speed_axis.set(xlabel="step", ylabel="tokens/s (all processes)", title="throughput")
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    pyplot.close(figure)
    return True


@torch.no_grad()
def validation_loss(fabric: Fabric, model: nn.Module, text: CharText, settings: Settings) -> float:
    model.eval()
    generator = torch.Generator().manual_seed(1234 + fabric.global_rank)
    losses = []
    for _ in range(4):
        window = text.batch(text.validation, settings.batch_size, settings.context, generator)
        window = window.to(fabric.device)
        losses.append(cross_entropy(model(window[:, :-1]), window[:, 1:]))
    model.train()
    return fabric.all_reduce(torch.stack(losses).mean()).item()


def train_step(
    fabric: Fabric,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    text: CharText,
    settings: Settings,
    step: int,
) -> torch.Tensor:
    """One optimizer step over ``settings.accumulate`` micro-batches; returns this process's mean loss.

    Gradients are synchronised once, on the last micro-batch. Each process draws its own
    batches from a seed of the rank and the step, so a resumed run draws what the
    uninterrupted run would have.
    """
    generator = torch.Generator().manual_seed(10_000 * step + fabric.global_rank)
    loss_sum = torch.zeros((), device=fabric.device)
    for micro in range(settings.accumulate):
        window = text.batch(text.train, settings.batch_size, settings.context, generator).to(fabric.device)
        with fabric.no_backward_sync(model, enabled=micro < settings.accumulate - 1):
            loss = cross_entropy(model(window[:, :-1]), window[:, 1:])
            fabric.backward(loss / settings.accumulate)
        loss_sum += loss.detach()
    fabric.clip_gradients(model, optimizer, max_norm=settings.max_norm)
    optimizer.step()
    optimizer.zero_grad()
    return loss_sum / settings.accumulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("accelerator", "strategy", "devices", "precision"):
        parser.add_argument(
            f"--{flag}", help=f"Fabric's {flag} (default: Fabric's, or what `fabric run` set)"
        )
    for name, default in asdict(Settings()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--out", default="runs/char-gpt", help="parent folder of the run folders")
    parser.add_argument("--resume", help="a checkpoint of an earlier run (any strategy) to continue from")
    args = parser.parse_args()
    settings = Settings(**{name: getattr(args, name) for name in asdict(Settings())})

    chosen = {flag: getattr(args, flag) for flag in ("accelerator", "strategy", "devices", "precision")}
    strategy_name = args.strategy or os.environ.get("FABRIC_STRATEGY") or "auto"  # set by `fabric run`
    logger = CSVLogger(args.out, name=strategy_name)
    fabric = Fabric(**{flag: value for flag, value in chosen.items() if value is not None}, loggers=logger)
    fabric.launch()
    seed_everything(42)
    # Rank 0's folder: only rank 0 writes logs, but every process writes the checkpoint there.
    run_folder = Path(fabric.broadcast(logger.log_dir))

    text = CharText()
    with fabric.init_module():
        model = CharGPT(len(text.alphabet), settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, settings)
    )
    model, optimizer = fabric.setup(model, optimizer)
    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "step": 0}
    if args.resume:
        fabric.load(args.resume, state)
        fabric.print(f"resumed from {args.resume} at step {state['step']}")
    logger.log_hyperparams({**asdict(settings), "world_size": fabric.world_size, "strategy": strategy_name})

    tokens_per_step = settings.batch_size * settings.context * settings.accumulate
    monitor = ThroughputMonitor(fabric, window_size=20)
    bar = progress_bar(fabric, settings.steps, state["step"])
    start = time.perf_counter()
    first_step = state["step"]
    for step in range(first_step, settings.steps):
        loss = train_step(fabric, model, optimizer, text, settings, step)
        scheduler.step()
        state["step"] = done = step + 1
        monitor.update(
            time=time.perf_counter() - start,
            batches=done - first_step,
            samples=(done - first_step) * settings.batch_size * settings.accumulate,
            lengths=(done - first_step) * tokens_per_step,
        )
        metrics = {"train/loss": fabric.all_reduce(loss).item(), "lr": scheduler.get_last_lr()[0]}
        rates = monitor.compute()
        if "items_per_sec" in rates:  # the items counted are tokens; these rates are the whole run's
            metrics["tokens_per_sec"] = rates["items_per_sec"]
            metrics["samples_per_sec"] = rates["samples_per_sec"]
        if done % settings.eval_every == 0 or done == settings.steps:
            metrics["val/loss"] = validation_loss(fabric, model, text, settings)
            if bar is None:
                fabric.print(
                    f"step {done:5d}  train {metrics['train/loss']:.3f}  val {metrics['val/loss']:.3f}"
                )
        fabric.log_dict(metrics, step=done)
        if bar is not None:
            speed = metrics.get("tokens_per_sec")
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", tok_s=f"{speed:,.0f}" if speed else "-")
            bar.update()
    if bar is not None:
        bar.close()

    checkpoint = run_folder / "checkpoint"
    fabric.save(checkpoint, state)
    logger.finalize("success")
    if fabric.is_global_zero:
        plotted = plot_curves(Path(logger.metrics_file_path), run_folder / "curves.png")
        fabric.print(
            f"final train loss {metrics['train/loss']:.3f}, validation loss {metrics['val/loss']:.3f}"
        )
        fabric.print(
            f"run folder: {run_folder}  (metrics.csv, hparams, checkpoint"
            f"{', curves.png' if plotted else '; pip install matplotlib for curves.png'})"
        )


if __name__ == "__main__":
    main()
