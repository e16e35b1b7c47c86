"""Live, shared CRDT documents for Jupyter.

A room is a shared pycrdt document on a server; clients join it over a wire and stay
in sync, edit by edit::

    async with bind("websocket", port=1234) as server:
        async with connect("websocket", id="notes", port=1234) as client:
            text = client.doc.get("text", type=Text)
            text += "hello"
"""

from ._version import __version__
from .channel import Channel, ChannelClosed
from .client import ChannelClient, ClientStatus
from .protocol import ProtocolError
from .room import Room, RoomManager
from .wire import ClientWire, ServerWire, UnknownWireError, bind, connect

__all__ = [
    "Channel",
    "ChannelClient",
    "ChannelClosed",
    "ClientStatus",
    "ClientWire",
    "ProtocolError",
    "Room",
    "RoomManager",
    "ServerWire",
    "UnknownWireError",
    "__version__",
    "bind",
    "connect",
]


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """Where Jupyter server finds this package's extension (it is enabled on install)."""
    from .jupyter.extension import RoomsApp

    return [{"module": "jupyter_rooms.jupyter.extension", "app": RoomsApp}]
