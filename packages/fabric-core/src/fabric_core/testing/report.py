"""The outcome of a conformance run: one `CheckResult` per check, in a `ConformanceReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CheckResult", "CheckStatus", "ConformanceReport"]

CheckStatus = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check over all ranks.

    Attributes:
        name: The check's name (see `fabric_core.testing.CHECK_NAMES`).
        status: ``"passed"`` on every rank, ``"failed"`` on at least one (or across ranks),
            or ``"skipped"`` (with the reason in ``problems``).
        problems: What went wrong, each prefixed with the ranks it happened on.
        seconds: The longest time a rank spent on the check.
    """

    name: str
    status: CheckStatus
    problems: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Whether the check passed (a skipped check neither passed nor failed)."""
        return self.status == "passed"

    def describe(self) -> str:
        """One line per problem, under the check's name."""
        head = f"{self.name}: {self.status}"
        return "\n".join([head, *(f"    {problem}" for problem in self.problems)])


@dataclass(frozen=True)
class ConformanceReport:
    """Every check's result, and why the run stopped early if it did.

    Attributes:
        target: What was checked, e.g. ``"strategy 'ddp_spawn' (world_size=2, accelerator='cpu')"``.
        results: One result per check, in run order.
        launch_error: Why the processes stopped before finishing, empty when they finished.
        seconds: How long the whole run took, launching included.
    """

    target: str
    results: tuple[CheckResult, ...]
    launch_error: str = ""
    seconds: float = 0.0
    _by_name: dict[str, CheckResult] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {result.name: result for result in self.results})

    @property
    def passed(self) -> bool:
        """Whether no check failed."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        """The failed checks, in run order."""
        return [result for result in self.results if result.status == "failed"]

    def __getitem__(self, name: str) -> CheckResult:
        """The result of the check ``name``.

        Raises:
            KeyError: The run did not include that check.
        """
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"The run did not include the check {name!r}; it ran: {', '.join(self._by_name)}."
            ) from None

    def summary(self) -> str:
        """A readable report: a status line per check, problems indented under it."""
        counts = {
            status: sum(r.status == status for r in self.results)
            for status in ("passed", "failed", "skipped")
        }
        lines = [
            f"Conformance of {self.target}: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped ({self.seconds:.1f} s)"
        ]
        for result in self.results:
            lines.append(f"  {result.status.upper():<8} {result.name}")
            lines += [f"           {problem}" for problem in result.problems]
        if self.launch_error:
            lines.append(f"  The processes stopped early: {self.launch_error}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def raise_for_failures(self) -> None:
        """Raise an ``AssertionError`` that lists every failed check, when any failed."""
        if self.passed:
            return
        lines = [f"{self.target} failed {len(self.failures)} of {len(self.results)} conformance checks:"]
        for result in self.failures:
            lines.append(f"  {result.name}:")
            lines += [f"    {problem}" for problem in result.problems]
        if self.launch_error:
            lines.append(f"The processes stopped early: {self.launch_error}")
        if len(self.failures) > 1:
            lines.append("A failure can cause the ones after it; fix them in order.")
        raise AssertionError("\n".join(lines))
