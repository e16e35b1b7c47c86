"""Message parsing details that other clients rely on."""

from __future__ import annotations

import pytest

from jupyter_rooms.protocol import (
    MessageType,
    ProtocolError,
    control_message,
    parse_control,
    parse_message,
    parse_raw_request,
    raw_message,
)


def test_jupyterlab_raw_requests_parse() -> None:
    # JupyterLab's save request: RAW, the string "save", then a counter.
    message = parse_message(b"\x02\x04save\x07")
    assert message.type == MessageType.RAW
    assert parse_raw_request(message.payload) == ("save", 7)
    assert parse_raw_request(b"\x04ping") == ("ping", None)
    for bad in (b"\x09save", b"\x04save\x07\x00", b"\x02\xff\xfe"):
        with pytest.raises(ProtocolError):
            parse_raw_request(bad)


def test_raw_replies_are_one_string() -> None:
    reply = raw_message('{"type":"save","responseTo":7,"status":"success"}')
    assert reply[0] == MessageType.RAW
    assert reply[1] == len(reply) - 2
    assert reply[2:].decode().startswith('{"type":"save"')


def test_control_notices_round_trip() -> None:
    notice = {"type": "epoch", "epoch": "abc"}
    message = parse_message(control_message(notice))
    assert message.type == MessageType.CONTROL
    assert parse_control(message.payload) == notice
    with pytest.raises(ProtocolError):
        parse_control(b"[1, 2]")
