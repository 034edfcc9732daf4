"""The ``devices`` argument: every accepted form, and one clear error for each bad one."""

from __future__ import annotations

import pytest

from fabric_core.utilities.device_parser import DeviceRequest, parse_devices

ACCEPTED_FORMS_HINT = "devices='auto'"


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (1, DeviceRequest(count=1)),
        (4, DeviceRequest(count=4)),
        ("1", DeviceRequest(count=1)),
        (" 3 ", DeviceRequest(count=3)),
        (-1, DeviceRequest(all=True)),
        ("-1", DeviceRequest(all=True)),
        ("auto", DeviceRequest(auto=True)),
        ([0, 2], DeviceRequest(indices=(0, 2))),
        ((1,), DeviceRequest(indices=(1,))),
        ("0,1", DeviceRequest(indices=(0, 1))),
        ("1,", DeviceRequest(indices=(1,))),
        (" 2 , 3 ", DeviceRequest(indices=(2, 3))),
    ],
)
def test_parse_devices_accepts_counts_indices_all_and_auto(devices: object, expected: DeviceRequest) -> None:
    assert parse_devices(devices) == expected


@pytest.mark.parametrize(
    ("devices", "reason"),
    [
        (0, "at least 1"),
        ("0", "at least 1"),
        (-3, "the only negative value allowed is -1"),
        ("-2", "the only negative value allowed is -1"),
        ("abc", "neither a number"),
        ("", "neither a number"),
        ([], "empty"),
        ((), "empty"),
        ([0, 0], "listed twice"),
        ("1,1", "listed twice"),
        ([-1], "cannot be negative"),
        ([0, "1"], "must hold device indices"),
        ([True], "must hold device indices"),
        ("0,a", "comma-separated string must list device indices"),
        (",", "comma-separated string must list device indices"),
        (True, "a bool is not a device count"),
        (1.5, "a float is not accepted"),
        (None, "a NoneType is not accepted"),
    ],
)
def test_parse_devices_rejects_malformed_input_with_one_explanation(devices: object, reason: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_devices(devices)
    message = str(excinfo.value)
    assert message.startswith(f"devices={devices!r} is not valid: ")
    assert reason in message
    assert ACCEPTED_FORMS_HINT in message, "the message must show the accepted forms"


def test_device_request_resolves_against_the_devices_that_exist() -> None:
    assert DeviceRequest(all=True).resolve(3) == [0, 1, 2]
    assert DeviceRequest(auto=True).resolve(2) == [0, 1]
    assert DeviceRequest(count=2).resolve(4) == [0, 1]
    assert DeviceRequest(indices=(3, 1)).resolve(4) == [3, 1]


def test_device_request_for_more_devices_than_exist_says_how_many_there_are() -> None:
    with pytest.raises(ValueError, match=r"asks for 5 devices, but only 2 are available"):
        DeviceRequest(count=5).resolve(2)
    with pytest.raises(ValueError, match=r"names device index 4, but only 2 device\(s\) are available"):
        DeviceRequest(indices=(0, 4)).resolve(2)
