"""A JupyterLab page's document provider, by hand: what the collaboration tests drive."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import anyio
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_rooms.protocol import MessageType, parse_message, sync_update
from jupyter_rooms.websocket import ClientChannel

from helpers import RawPeer

TOKEN = "collab-token"


def auth(server: Any) -> dict[str, str]:
    """The header that gives the server's token."""
    return {"Authorization": f"token {server.token}"}


async def request(
    server: Any, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """An HTTP request to the server; its status and JSON answer (errors too)."""
    try:
        response = await AsyncHTTPClient().fetch(
            server.url + path,
            method=method,
            body=None if body is None else json.dumps(body),
            headers=auth(server) if headers is None else headers,
            allow_nonstandard_methods=True,
        )
    except HTTPClientError as exc:
        assert exc.response is not None
        text = exc.response.body.decode()
        return exc.code, json.loads(text) if text.startswith("{") else text
    return response.code, json.loads(response.body) if response.body else None


async def session(server: Any, path: str, file_format: str, file_type: str) -> dict[str, Any]:
    status, answer = await request(
        server,
        "PUT",
        "api/collaboration/session/" + quote(path, safe=""),
        {"format": file_format, "type": file_type},
    )
    assert status in (200, 201), answer
    result: dict[str, Any] = answer
    return result


async def room_socket(
    server: Any, room: str, *, session_id: str = "", headers: dict[str, str] | None = None
) -> ClientChannel:
    url = server.url.replace("http", "ws", 1) + "api/collaboration/room/" + room
    if session_id:
        url += f"?sessionId={session_id}"
    connection = await websocket_connect(
        HTTPRequest(url, headers=auth(server) if headers is None else headers)
    )
    return ClientChannel(connection, room)


async def closed(channel: ClientChannel) -> tuple[int | None, str]:
    """Read until the server closes the socket; its close code and reason."""
    with anyio.fail_after(5):
        while True:
            try:
                await channel.recv()
            except Exception:
                return channel.close_code, channel.close_reason


class Peer(RawPeer):
    """A page's document provider, by hand: it syncs, keeps what it receives, and
    records RAW and CONTROL messages."""

    def __init__(self, channel: ClientChannel) -> None:
        super().__init__(channel)
        self.raw: list[dict[str, Any]] = []
        self.control: list[bytes] = []

    def handle(self, data: bytes) -> bytes | None:
        message = parse_message(data)
        if message.type == MessageType.RAW:
            # One length-prefixed string, JSON, as the front end reads it.
            self.raw.append(json.loads(message.payload[1:].decode()))
        elif message.type == MessageType.CONTROL:
            self.control.append(data)
        return super().handle(data)

    async def pump(self, until: Any, within: float = 5.0) -> None:
        """Apply what arrives until `until()` holds."""
        with anyio.fail_after(within):
            while not until():
                reply = self.handle(await self.channel.recv())
                if reply is not None:
                    await self.channel.send(reply)

    async def edit(self, change: Any) -> None:
        """Change the document and send the change, as a provider does."""
        state = self.doc.get_state()
        change(self.doc)
        await self.channel.send(sync_update(self.doc.get_update(state)))

    async def save(self, number: int) -> dict[str, Any]:
        await self.channel.send(bytes((MessageType.RAW, 4)) + b"save" + bytes((number,)))
        await self.pump(lambda: any(r.get("responseTo") == number for r in self.raw))
        return next(r for r in self.raw if r.get("responseTo") == number)


async def joined(server: Any, path: str, file_format: str, file_type: str) -> Peer:
    answer = await session(server, path, file_format, file_type)
    channel = await room_socket(
        server, f"{file_format}:{file_type}:{answer['fileId']}", session_id=answer["sessionId"]
    )
    peer = Peer(channel)
    with anyio.fail_after(5):
        await peer.sync()
    return peer
