"""The y-websocket protocol: parsing and encoding of the messages rooms exchange.

Every message starts with a varint message type. ``SYNC`` messages carry a sync step
(``STEP1``: a state vector, ``STEP2``: the updates the peer misses, ``UPDATE``: a live
update) and a length-prefixed payload; ``AWARENESS`` messages carry a length-prefixed
awareness update. Yjs clients ignore types they do not know, which is where
``CONTROL`` messages (JSON, ours) and JupyterLab's ``RAW`` messages live.

All parsing is strict: anything that is not exactly one well-formed message raises
:class:`ProtocolError`, so that a server can refuse it before it touches a document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from pycrdt import get_state, merge_updates

__all__ = [
    "EMPTY_STATE",
    "EMPTY_UPDATE",
    "Message",
    "MessageType",
    "ProtocolError",
    "SyncType",
    "TextMessage",
    "awareness_message",
    "control_message",
    "merged_update_message",
    "parse_control",
    "parse_message",
    "parse_raw_request",
    "raw_message",
    "sync_step1",
    "sync_step2",
    "sync_update",
    "validate_awareness_update",
    "validate_update",
]

# An update that changes nothing: what a peer sends as step 2 when it has nothing new.
EMPTY_UPDATE = b"\x00\x00"
# The state vector of an empty document: what a peer that has nothing sends as step 1.
EMPTY_STATE = b"\x00"


class MessageType(IntEnum):
    """The first varint of every message."""

    SYNC = 0
    AWARENESS = 1
    # JupyterLab's collaborative front end sends save requests as RAW messages.
    RAW = 2
    # Our own notices (room epoch, errors) as JSON; Yjs clients ignore this type.
    CONTROL = 100


class SyncType(IntEnum):
    """The second varint of a ``SYNC`` message."""

    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


class ProtocolError(ValueError):
    """A message that does not follow the protocol."""


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed message.

    Attributes:
        type: The message type.
        payload: The message's payload, without its length prefix.
        sync_type: For ``SYNC`` messages, the sync step; ``None`` otherwise.
    """

    type: MessageType
    payload: bytes
    sync_type: SyncType | None = None


def _write_var_uint(num: int) -> bytes:
    out = bytearray()
    while num > 0x7F:
        out.append(0x80 | (num & 0x7F))
        num >>= 7
    out.append(num)
    return bytes(out)


def _read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    num = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ProtocolError("message ends inside a number")
        byte = data[pos]
        pos += 1
        num |= (byte & 0x7F) << shift
        if byte < 0x80:
            return num, pos
        shift += 7
        if shift > 63:
            raise ProtocolError("number too large")


def _read_payload(data: bytes, pos: int) -> bytes:
    length, pos = _read_var_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise ProtocolError(f"payload of {length} bytes announced, {len(data) - pos} present")
    if end != len(data):
        raise ProtocolError(f"{len(data) - end} unexpected bytes after the payload")
    return data[pos:end]


class TextMessage(bytes):
    """The UTF-8 bytes of a text websocket message, which this binary protocol does
    not allow: [parse_message][jupyter_rooms.protocol.parse_message] refuses it, whatever
    its bytes would read as."""


def parse_message(data: bytes) -> Message:
    """Parse one message.

    Args:
        data: The bytes of exactly one message.

    Returns:
        The parsed message. Its payload is not validated as an update: see
        [validate_update][jupyter_rooms.protocol.validate_update].

    Raises:
        ProtocolError: The bytes are not one well-formed message of a known type.
    """
    if not isinstance(data, bytes):
        raise ProtocolError(f"messages are binary, got {type(data).__name__}")
    if isinstance(data, TextMessage):
        raise ProtocolError("messages are binary, got a text message")
    msg_type, pos = _read_var_uint(data, 0)
    if msg_type == MessageType.SYNC:
        sync_type, pos = _read_var_uint(data, pos)
        if sync_type not in SyncType._value2member_map_:
            raise ProtocolError(f"unknown sync step {sync_type}")
        return Message(MessageType.SYNC, _read_payload(data, pos), SyncType(sync_type))
    if msg_type == MessageType.AWARENESS:
        return Message(MessageType.AWARENESS, _read_payload(data, pos))
    if msg_type == MessageType.RAW:
        # JupyterLab writes its own fields here (a string, then a number): keep the rest
        # as it is for whoever speaks that dialect.
        return Message(MessageType.RAW, data[pos:])
    if msg_type == MessageType.CONTROL:
        return Message(MessageType.CONTROL, _read_payload(data, pos))
    raise ProtocolError(f"unknown message type {msg_type}")


def validate_update(update: bytes) -> None:
    """Check that bytes decode as a Yjs update, without applying them anywhere.

    Args:
        update: The bytes to check.

    Raises:
        ProtocolError: The bytes are not a valid update.
    """
    try:
        get_state(update)
    except BaseException as exc:
        # pycrdt reports malformed updates as exceptions from its Rust core, some of
        # which (panics) do not derive from Exception.
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        raise ProtocolError(f"invalid update: {exc}") from None


def validate_awareness_update(update: bytes) -> None:
    """Check that bytes decode as one awareness update, as a whole.

    An awareness update is a count, then that many entries of a client id, a clock and
    a JSON state (empty for none). pycrdt applies entries one by one as it decodes them,
    so a message that breaks halfway would leave its first entries applied; checking
    first keeps a malformed message from changing anything.

    Args:
        update: The payload of an awareness message.

    Raises:
        ProtocolError: The bytes are not exactly one well-formed awareness update.
    """
    count, pos = _read_var_uint(update, 0)
    for _ in range(count):
        _, pos = _read_var_uint(update, pos)  # client id
        _, pos = _read_var_uint(update, pos)  # clock
        length, pos = _read_var_uint(update, pos)
        end = pos + length
        if end > len(update):
            raise ProtocolError("awareness state cut short")
        try:
            state = update[pos:end].decode()
            if state:
                json.loads(state)
        except ValueError as exc:
            raise ProtocolError(f"invalid awareness state: {exc}") from None
        pos = end
    if pos != len(update):
        raise ProtocolError(f"{len(update) - pos} unexpected bytes after the awareness update")


def _sync(sync_type: SyncType, payload: bytes) -> bytes:
    return bytes((MessageType.SYNC, sync_type)) + _write_var_uint(len(payload)) + payload


def sync_step1(state: bytes) -> bytes:
    """Encode a sync step 1 message.

    Args:
        state: The sender's state vector.

    Returns:
        The message.
    """
    return _sync(SyncType.STEP1, state)


def sync_step2(update: bytes) -> bytes:
    """Encode a sync step 2 message.

    Args:
        update: What the receiver misses, as one update.

    Returns:
        The message.
    """
    return _sync(SyncType.STEP2, update)


def sync_update(update: bytes) -> bytes:
    """Encode a live update message.

    Args:
        update: The update.

    Returns:
        The message.
    """
    return _sync(SyncType.UPDATE, update)


def merged_update_message(updates: list[bytes]) -> bytes:
    """Encode several updates as one live update message.

    Args:
        updates: The updates, in the order they were made.

    Returns:
        One message carrying all of them.
    """
    return sync_update(updates[0] if len(updates) == 1 else merge_updates(*updates))


def awareness_message(update: bytes) -> bytes:
    """Encode an awareness message.

    Args:
        update: An encoded awareness update.

    Returns:
        The message.
    """
    return bytes((MessageType.AWARENESS,)) + _write_var_uint(len(update)) + update


def raw_message(text: str) -> bytes:
    """Encode a RAW message as JupyterLab reads them: one length-prefixed string.

    Args:
        text: The string, usually JSON (a save reply, a conflict notice).

    Returns:
        The message.
    """
    payload = text.encode()
    return bytes((MessageType.RAW,)) + _write_var_uint(len(payload)) + payload


def parse_raw_request(payload: bytes) -> tuple[str, int | None]:
    """Read a RAW request as JupyterLab writes them: a string, then maybe a number.

    Args:
        payload: The payload of a parsed RAW message.

    Returns:
        The string (``"save"``, for one) and the number after it, if any.

    Raises:
        ProtocolError: The payload is not of that form.
    """
    length, pos = _read_var_uint(payload, 0)
    end = pos + length
    if end > len(payload):
        raise ProtocolError("RAW message ends inside its string")
    try:
        name = payload[pos:end].decode()
    except UnicodeDecodeError:
        raise ProtocolError("RAW message's string is not UTF-8") from None
    if end == len(payload):
        return name, None
    number, pos = _read_var_uint(payload, end)
    if pos != len(payload):
        raise ProtocolError("unexpected bytes after a RAW request")
    return name, number


def control_message(notice: dict[str, Any]) -> bytes:
    """Encode a CONTROL message: a JSON notice from a server to its clients.

    Args:
        notice: A JSON-serialisable mapping with at least a ``"type"`` key.

    Returns:
        The message.
    """
    payload = json.dumps(notice, separators=(",", ":")).encode()
    return _write_var_uint(MessageType.CONTROL) + _write_var_uint(len(payload)) + payload


def parse_control(payload: bytes) -> dict[str, Any]:
    """Decode the payload of a CONTROL message.

    Args:
        payload: The payload of a parsed CONTROL message.

    Returns:
        The notice.

    Raises:
        ProtocolError: The payload is not a JSON object with a ``"type"``.
    """
    try:
        notice = json.loads(payload)
    except ValueError as exc:
        raise ProtocolError(f"control message is not JSON: {exc}") from None
    if not isinstance(notice, dict) or not isinstance(notice.get("type"), str):
        raise ProtocolError("control message has no type")
    return notice
