"""The launcher interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any


class Launcher(ABC):
    """Starts the processes of a run and calls the user's function in each.

    A strategy that needs several processes creates its launcher; ``fabric.launch()``
    hands it the function to run.
    """

    @property
    @abstractmethod
    def is_interactive_compatible(self) -> bool:
        """Whether this launcher works from an interactive session (a notebook, the REPL)."""

    @property
    def needs_launch(self) -> bool:
        """Whether ``fabric.launch()`` must run before the strategy can be used (processes are missing)."""
        return False

    @property
    def requires_function(self) -> bool:
        """Whether ``fabric.launch()`` must be given a function (it cannot continue the script)."""
        return False

    @abstractmethod
    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function(*args, **kwargs)`` in every process; return rank 0's result."""
