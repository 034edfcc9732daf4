"""Parsing of the ``devices`` argument, independent of any accelerator.

``devices`` is accepted as

- an int: ``2`` means two devices, ``-1`` means every device there is;
- a list or tuple of device indices: ``[0, 2]``;
- a string: ``"2"`` (a count), ``"0,1"`` or ``"1,"`` (indices), ``"-1"`` (all), ``"auto"``.

`parse_devices` turns any of these into a `DeviceRequest`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DeviceRequest", "parse_devices"]


@dataclass(frozen=True)
class DeviceRequest:
    """What the user asked for: a number of devices, explicit indices, all, or auto.

    Exactly one of ``count`` and ``indices`` is set unless ``all`` or ``auto`` is true.
    """

    count: int | None = None
    indices: tuple[int, ...] | None = None
    all: bool = False
    auto: bool = False

    def resolve(self, available: int) -> list[int]:
        """The device indices this request selects when ``available`` devices exist.

        Raises:
            ValueError: More devices, or an index beyond the ones that exist, were asked for.
        """
        if self.all or self.auto:
            return list(range(available))
        if self.indices is not None:
            missing = [i for i in self.indices if i >= available]
            if missing:
                raise ValueError(
                    f"devices={list(self.indices)} names device index {missing[0]}, but only "
                    f"{available} device(s) are available (indices 0..{available - 1})."
                )
            return list(self.indices)
        assert self.count is not None
        if self.count > available:
            raise ValueError(
                f"devices={self.count} asks for {self.count} devices, but only {available} are available."
            )
        return list(range(self.count))


def parse_devices(devices: int | str | Sequence[int]) -> DeviceRequest:
    """Validate and normalise the ``devices`` argument.

    Raises:
        ValueError: ``devices`` is zero, a negative number other than -1, an empty list,
            a list with repeated or negative indices, or a string that is none of the
            accepted forms. The message shows the accepted forms.
    """
    if isinstance(devices, bool):
        raise ValueError(_explain(devices, "a bool is not a device count"))
    if isinstance(devices, int):
        return _from_int(devices)
    if isinstance(devices, str):
        return _from_string(devices)
    if isinstance(devices, Sequence):
        return _from_indices(devices, devices)
    raise ValueError(_explain(devices, f"a {type(devices).__name__} is not accepted"))


def _from_int(devices: int, original: object = None) -> DeviceRequest:
    original = devices if original is None else original
    if devices == -1:
        return DeviceRequest(all=True)
    if devices <= 0:
        reason = (
            "it must be at least 1" if devices == 0 else "the only negative value allowed is -1 (all devices)"
        )
        raise ValueError(_explain(original, reason))
    return DeviceRequest(count=devices)


def _from_string(devices: str) -> DeviceRequest:
    text = devices.strip()
    if text == "auto":
        return DeviceRequest(auto=True)
    if "," in text:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts or not all(_is_int(p) for p in parts):
            raise ValueError(_explain(devices, "a comma-separated string must list device indices"))
        return _from_indices([int(p) for p in parts], devices)
    if _is_int(text):
        return _from_int(int(text), devices)
    raise ValueError(_explain(devices, "the string is neither a number, a list of indices, nor 'auto'"))


def _from_indices(indices: Sequence[object], original: object) -> DeviceRequest:
    if not indices:
        raise ValueError(_explain(original, "the list of device indices is empty"))
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise ValueError(_explain(original, "a list must hold device indices (ints)"))
    values = tuple(int(i) for i in indices)  # type: ignore[call-overload]
    if any(i < 0 for i in values):
        raise ValueError(_explain(original, "device indices cannot be negative"))
    if len(set(values)) != len(values):
        raise ValueError(_explain(original, "a device index is listed twice"))
    return DeviceRequest(indices=values)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _explain(devices: object, reason: str) -> str:
    return (
        f"devices={devices!r} is not valid: {reason}. Pass a count (devices=2), -1 for all devices, "
        "a list of indices (devices=[0, 1] or devices='0,1'), or devices='auto'."
    )
