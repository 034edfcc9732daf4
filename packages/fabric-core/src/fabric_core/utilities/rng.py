"""The state of every process's random number generators, as one entry of a checkpoint.

`RandomState` is a stateful object for the state given to ``fabric.save`` and
``fabric.load``: a resumed run draws the same dropout masks, augmentations and shuffles as
the uninterrupted one. Saving happens on every process, so ``state_dict`` gathers every
rank's generators into one list indexed by global rank that is identical everywhere: a
single file written by rank 0, or a DCP directory that keeps one copy of a replicated
entry, holds them all. Loading restores this rank's own entry.

Glossary: a rank's *entry* is the dict of its generators' states; the *generators* are
torch's CPU generator, the CUDA generators of every device (when CUDA is initialized),
Python's ``random`` and NumPy's global ``numpy.random`` generator (when NumPy is imported).
Only tensors, numbers, strings, ``None``, lists and dicts are stored, so the checkpoint
loads with ``weights_only=True``.
"""

from __future__ import annotations

import io
import random
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import torch

from fabric_core.utilities.rank_zero import warn_once

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric

__all__ = ["RandomState"]

FORMAT: Final = "fabric.RandomState"
"""The ``"format"`` value that marks a `RandomState.state_dict`."""
VERSION: Final = 1
"""The layout version of `RandomState.state_dict`."""
_EXPECTED: Final = (
    f"the dict that RandomState.state_dict() returns ({{'format': {FORMAT!r}, 'version': {VERSION}, "
    "'ranks': [one dict of generator states per global rank]}})"
)


class RandomState:
    """Saves and restores the random number generators of every process of a run.

    Put it into the checkpoint state next to the model and the optimizer::

        from fabric_core.utilities.rng import RandomState

        state = {"model": model, "optimizer": optimizer, "rng": RandomState(fabric)}
        fabric.save("checkpoint.pt", state)
        ...
        fabric.load("checkpoint.pt", state)  # each rank continues its own random streams

    Saved per rank: torch's CPU generator, every CUDA device's generator when CUDA is
    initialized, Python's ``random``, and NumPy's global generator when NumPy is imported
    (generator objects the program creates itself, such as ``torch.Generator`` or
    ``numpy.random.default_rng()``, are not included: save their states as entries of
    their own).

    ``state_dict()`` is called on every process (``fabric.save`` does): with several
    processes it gathers the ranks' states with two ``all_gather`` calls of a few kilobytes
    each. ``load_state_dict()`` restores this process's entry. A checkpoint saved with
    another number of processes restores the ranks it has an entry for; the other ranks
    keep their current generators (copying another rank's streams would give two ranks the
    same dropout masks) and a warning names both numbers.

    Args:
        fabric: The ``Fabric`` of the run; its strategy gathers the states.

    Raises:
        TypeError: ``fabric`` is not a ``Fabric``.
    """

    def __init__(self, fabric: Fabric) -> None:
        from fabric_core.fabric import Fabric

        if not isinstance(fabric, Fabric):
            raise TypeError(
                f"RandomState(fabric) takes the Fabric of the run, got {type(fabric).__name__}: {fabric!r:.60}. "
                "Write RandomState(fabric) with the object that fabric.save and fabric.load are called on."
            )
        self._fabric = fabric

    def state_dict(self) -> dict[str, Any]:
        """Every rank's generator states, the same on every process; every process must call it.

        Returns:
            ``{"format": "fabric.RandomState", "version": 1, "world_size": N, "ranks": [entry, ...]}``
            with one entry per global rank (``"torch"``, ``"python"``, and ``"cuda"`` and
            ``"numpy"`` when those generators are in use).
        """
        entry = _capture()
        world_size = self._fabric.world_size
        ranks = [entry] if world_size == 1 else _gather(self._fabric, entry)
        return {"format": FORMAT, "version": VERSION, "world_size": len(ranks), "ranks": ranks}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore this rank's generators from ``state_dict`` (as `state_dict` returned it).

        This rank's entry is checked before any generator changes. Saved at another number of
        processes, the ranks that have an entry restore it and the others keep their
        generators, with one warning that names both numbers.

        Raises:
            TypeError: ``state_dict`` is not a dict (e.g. another entry of the checkpoint).
            ValueError: It is a dict, but not one that `state_dict` wrote, or a
                generator's state in it is damaged.
        """
        ranks = _check_state_dict(state_dict)
        rank, world_size = self._fabric.global_rank, self._fabric.world_size
        if len(ranks) != world_size:
            warn_once(_world_size_message(len(ranks), world_size))
        if rank >= len(ranks):
            return
        _restore(_parse_entry(ranks[rank], rank))

    def __repr__(self) -> str:
        generators = ", ".join(_generators())
        return f"RandomState(world_size={self._fabric.world_size}, generators=[{generators}])"


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _generators() -> list[str]:
    """The names of the generators `_capture` saves in this process now."""
    in_use = {"cuda": _cuda_in_use(), "numpy": "numpy" in sys.modules}
    return [name for name in ("torch", "cuda", "python", "numpy") if in_use.get(name, True)]


def _capture() -> dict[str, Any]:
    """This process's generator states, as tensors, numbers and ``None`` in dicts and lists."""
    entry: dict[str, Any] = {"torch": torch.get_rng_state()}
    if _cuda_in_use():
        entry["cuda"] = list(torch.cuda.get_rng_state_all())
    version, internal, gauss_next = random.getstate()
    entry["python"] = {
        "version": version,
        "state": torch.tensor(internal, dtype=torch.int64),
        "gauss_next": gauss_next,
    }
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        name, keys, position, has_gauss, cached_gaussian = numpy.random.get_state()
        entry["numpy"] = {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype("int64")),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        }
    return entry


def _gather(fabric: Fabric, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``entry``, by global rank: serialized, padded to the longest, all-gathered as bytes."""
    buffer = io.BytesIO()
    torch.save(entry, buffer)
    payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    sizes = fabric.all_gather(torch.tensor(payload.numel(), device=fabric.device)).reshape(-1).tolist()
    padded = torch.zeros(max(sizes), dtype=torch.uint8, device=fabric.device)
    padded[: payload.numel()] = payload.to(fabric.device)
    gathered = fabric.all_gather(padded).cpu()
    return [
        torch.load(io.BytesIO(bytes(gathered[rank, :size].tolist())), weights_only=True)
        for rank, size in enumerate(sizes)
    ]


def _check_state_dict(state_dict: Any) -> list[Any]:
    """The list of rank entries in ``state_dict``, refusing anything `RandomState.state_dict` did not write."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"RandomState.load_state_dict() got {type(state_dict).__name__} ({state_dict!r:.80}), but takes "
            f"{_EXPECTED}. Is the RandomState given the name of another entry of the checkpoint?"
        )
    if state_dict.get("format") != FORMAT:
        keys = ", ".join(repr(key) for key in list(state_dict)[:5]) + (", ..." if len(state_dict) > 5 else "")
        raise ValueError(
            f"RandomState.load_state_dict() got a dict with the keys {keys or 'none'}, not {_EXPECTED}. "
            "Is the RandomState given the name of another entry of the checkpoint?"
        )
    if state_dict.get("version") != VERSION:
        raise ValueError(
            f"RandomState.load_state_dict() got a state of layout version {state_dict.get('version')!r}; this "
            f"fabric reads version {VERSION}. Load the checkpoint with the fabric version that saved it."
        )
    ranks = state_dict.get("ranks")
    if not isinstance(ranks, (list, tuple)) or not ranks:
        raise ValueError(
            f"RandomState.load_state_dict(): 'ranks' must be a non-empty list with one entry per rank, got "
            f"{type(ranks).__name__}: {ranks!r:.80}. The checkpoint is damaged; save it again."
        )
    return list(ranks)


def _parse_entry(entry: Any, rank: int) -> dict[str, Any]:
    """Rank ``rank``'s entry as the setters take it, checked by loading it into throwaway generators."""
    where = f"RandomState.load_state_dict(): the entry of rank {rank}"
    if not isinstance(entry, Mapping) or "torch" not in entry or "python" not in entry:
        found = list(entry) if isinstance(entry, Mapping) else type(entry).__name__
        raise ValueError(
            f"{where} must be a dict with the generators 'torch' and 'python' (and 'cuda' and 'numpy' when "
            f"saved), got {found}. The checkpoint is damaged; save it again."
        )
    parsed: dict[str, Any] = {}
    try:
        parsed["torch"] = _byte_tensor(entry["torch"], "torch")
        torch.Generator().set_state(parsed["torch"])
        python = entry["python"]
        parsed["python"] = (int(python["version"]), tuple(python["state"].tolist()), python["gauss_next"])
        random.Random().setstate(parsed["python"])
        if "cuda" in entry:
            parsed["cuda"] = [_byte_tensor(state, "cuda") for state in entry["cuda"]]
        if "numpy" in entry:
            parsed["numpy"] = _parse_numpy(entry["numpy"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
        raise ValueError(
            f"{where} holds a damaged generator state ({type(error).__name__}: {error}). The checkpoint is "
            "damaged; save it again."
        ) from error
    return parsed


def _byte_tensor(value: Any, generator: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.dim() != 1:
        raise ValueError(f"the {generator} generator's state must be a 1-D uint8 tensor, got {value!r:.60}")
    return value.cpu()


def _parse_numpy(value: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """NumPy's ``get_state()`` tuple, checked on a throwaway generator; ``None`` when NumPy is not imported."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    state = (
        str(value["name"]),
        numpy.asarray(value["keys"].tolist(), dtype=numpy.uint32),
        int(value["position"]),
        int(value["has_gauss"]),
        float(value["cached_gaussian"]),
    )
    numpy.random.RandomState().set_state(state)
    return state


def _restore(parsed: dict[str, Any]) -> None:
    """Set this process's generators from a checked entry."""
    torch.set_rng_state(parsed["torch"])
    random.setstate(parsed["python"])
    if "cuda" in parsed:
        if torch.cuda.is_available():
            states = parsed["cuda"]
            for device in range(min(len(states), torch.cuda.device_count())):
                torch.cuda.set_rng_state(states[device], device)
            if len(states) != torch.cuda.device_count():
                warn_once(
                    f"RandomState: the checkpoint holds the CUDA generators of {len(states)} device(s), this "
                    f"process sees {torch.cuda.device_count()}; the devices of both are restored, the others "
                    "keep their generators."
                )
        else:
            warn_once(
                "RandomState: the checkpoint holds CUDA generator states, but CUDA is not available here; "
                "only the CPU, Python and NumPy generators are restored."
            )
    if "numpy" in parsed:
        if parsed["numpy"] is None:
            warn_once(
                "RandomState: the checkpoint holds NumPy's generator state, but NumPy is not imported here; "
                "import numpy before fabric.load to restore it."
            )
        else:
            sys.modules["numpy"].random.set_state(parsed["numpy"])


def _world_size_message(saved: int, current: int) -> str:
    if current > saved:
        keep = "keeps its" if current == saved + 1 else "keep their"
        outcome = (
            f"the saved generators are restored on {_ranks(0, saved - 1)}, and {_ranks(saved, current - 1)} "
            f"{keep} current ones (a copy of another rank's would repeat its random numbers, e.g. its dropout "
            "masks)"
        )
    else:
        outcome = f"each rank restores its own generators; those of {_ranks(current, saved - 1)} are not used"
    return (
        f"RandomState: the checkpoint holds the generators of world size {saved}, but this run has world size "
        f"{current}: {outcome}."
    )


def _ranks(first: int, last: int) -> str:
    return f"rank {first}" if first == last else f"ranks {first} to {last}"
