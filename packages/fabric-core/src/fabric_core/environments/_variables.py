"""Reading the integers and ports that schedulers export, with errors that name the variable."""

from __future__ import annotations

import os


def read_int(name: str, default: int | None = None, *, hint: str = "") -> int:
    """The integer in the environment variable ``name``.

    Args:
        name: The variable to read.
        default: Returned when the variable is unset; ``None`` makes it required.
        hint: A sentence appended to the error for a missing variable (how to fix it).

    Returns:
        The variable's value as an integer.

    Raises:
        ValueError: The variable is required but unset, or does not hold an integer.
    """
    text = os.environ.get(name)
    if text is None or not text.strip():
        if default is not None:
            return default
        raise ValueError(f"The environment variable {name} is not set. {hint}".rstrip())
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"The environment variable {name}={text!r} must be an integer.") from None


def first_int(*names: str) -> tuple[str, int] | None:
    """The first of ``names`` that is set, with its integer value, or ``None`` when none is set.

    Raises:
        ValueError: The first variable that is set does not hold an integer.
    """
    for name in names:
        if os.environ.get(name, "").strip():
            return name, read_int(name)
    return None


def port_from_job_id(variable: str, *, base: int = 10000) -> int:
    """``MASTER_PORT`` when set, else ``base`` plus the last four digits of the job id in ``variable``.

    Every task of one job reads the same job id, so every task agrees on the port without
    talking to the others. Two jobs whose ids end in the same four digits and share a node
    would collide; setting ``MASTER_PORT`` avoids that.

    Args:
        variable: The variable holding the scheduler's job id (``SLURM_JOB_ID``, ``LSB_JOBID``).
        base: The lowest port that can be derived.

    Returns:
        The port rank 0 listens on.

    Raises:
        ValueError: Neither ``MASTER_PORT`` nor a numeric job id is available.
    """
    if os.environ.get("MASTER_PORT", "").strip():
        return read_int("MASTER_PORT")
    job_id = os.environ.get(variable, "").strip()
    digits = "".join(character for character in job_id if character.isdigit())
    if not digits:
        raise ValueError(
            f"Cannot choose the main port: MASTER_PORT is not set and {variable}={job_id!r} holds no job "
            "number to derive one from. Export MASTER_PORT (e.g. MASTER_PORT=29500) before launching."
        )
    return base + int(digits[-4:])
