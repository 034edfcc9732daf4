"""Soft assertions for the conformance checks.

A check runs every collective first and asserts afterwards, so one rank that finds a wrong
value never leaves the others waiting in a collective it skipped. `Expect` collects
the problems of one check and raises them together at the end.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["CheckSkipped", "Expect", "describe_tensor", "local_tensor"]


class CheckSkipped(Exception):
    """Raised by a check that does not apply to this strategy or world size; the message says why."""


class Expect:
    """Collects the problems found by one check on one rank."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def true(self, condition: bool, message: str) -> None:
        """Record ``message`` when ``condition`` is false."""
        if not condition:
            self.problems.append(message)

    def close(self, actual: Any, expected: torch.Tensor, tolerance: float, what: str) -> None:
        """Record a problem unless ``actual`` is a tensor equal to ``expected`` within ``tolerance``.

        Shapes must match exactly; values are compared on the CPU in ``expected``'s dtype
        with ``rtol = atol = tolerance``.
        """
        if not isinstance(actual, torch.Tensor):
            self.problems.append(f"{what}: expected a tensor, got {type(actual).__name__} {actual!r}")
            return
        actual = local_tensor(actual)
        if tuple(actual.shape) != tuple(expected.shape):
            self.problems.append(
                f"{what}: expected shape {tuple(expected.shape)}, got {tuple(actual.shape)} "
                f"({describe_tensor(actual)})"
            )
            return
        got = actual.detach().to("cpu", expected.dtype)
        if not torch.allclose(got, expected, rtol=tolerance, atol=tolerance, equal_nan=True):
            difference = (got - expected).abs().max().item() if got.numel() else 0.0
            self.problems.append(
                f"{what}: expected {describe_tensor(expected)}, got {describe_tensor(got)} "
                f"(largest difference {difference:.3g}, tolerance {tolerance:g})"
            )

    def raise_if_failed(self) -> None:
        """Raise one ``AssertionError`` listing every recorded problem."""
        if self.problems:
            raise AssertionError("; ".join(self.problems))


def describe_tensor(tensor: torch.Tensor, limit: int = 6) -> str:
    """A short description of a tensor: its first values, and its shape when it is larger."""
    flat = tensor.detach().reshape(-1).to("cpu")
    values = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in flat[:limit].tolist())
    more = ", ..." if flat.numel() > limit else ""
    return f"[{values}{more}] (shape {tuple(tensor.shape)}, {str(tensor.dtype).replace('torch.', '')})"


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a sharded tensor (a DTensor's local shard); a plain tensor as it is."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor
