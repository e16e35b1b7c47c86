"""A live widget of a room's document, for JupyterLab and Jupyter Notebook.

``RoomWidget(client)`` (or just ``display(client)``) shows the document of a client's
room and lets people edit it: a text file's room as its text, a notebook's room as its
cells, any other room as a tree of its Maps, Arrays and Texts. It also shows who else is
in the room and whether the client is connected.

The browser keeps a Yjs copy of the document (Yjs is bundled into the widget's
JavaScript, so nothing is fetched at run time). The kernel relays between that copy and
``client.doc`` over the widget's comm, as binary Y updates in message buffers: every
change of ``client.doc`` goes to the browser, every edit made in the browser is applied to
``client.doc`` and so reaches the room. Because the browser edits a CRDT rather than
replacing a string, concurrent typing merges character by character and a remote edit
never moves the caret of the person typing.

Create the widget on the event loop the client runs on (in a notebook, the kernel's: the
loop that runs a cell's ``await``). The kernel may handle the widget's messages on another
thread (ipykernel runs comm messages on a subshell so that widgets answer while a cell is
busy); the widget hands them over to that loop, where the client's document lives.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import weakref
from enum import Enum
from pathlib import Path
from typing import Any

import anywidget
import traitlets
from pycrdt import Doc, Subscription, TransactionEvent

from .protocol import EMPTY_UPDATE
from .wire import ClientWire

__all__ = ["RoomWidget", "widget_for"]

log = logging.getLogger("jupyter_rooms.widget")

STATIC = Path(__file__).parent / "static"


class MessageType(str, Enum):
    """The ``type`` of the widget's messages; their payloads travel as buffers."""

    SYNC = "sync"
    """From the browser: its state vector. From the kernel: the update the browser lacks,
    and the kernel's state vector."""
    UPDATE = "update"
    """A Y update, either way."""
    RESET = "reset"
    """From the kernel: the room started a new history; the browser replaces its copy of
    the document by the one in the message's update."""


class RoomWidget(anywidget.AnyWidget):
    """A live view of a client's room in a notebook, where people can edit the document.

    Display it as a cell's result, or with ``IPython.display.display``. Displaying the
    client itself (``display(client)``) shows the same widget.

    Args:
        client: A connected client of any wire, running on the kernel's event loop.
        max_height: The tallest the document's view grows before it scrolls, as a CSS
            length.
    """

    _esm = STATIC / "widget.js"

    room = traitlets.Unicode("", help="The room's id.").tag(sync=True)
    status = traitlets.Unicode(
        "connecting",
        help="The client's connection: connecting, connected, synchronized, "
        "disconnected or closed (the view is then read-only: edits would reach no one).",
    ).tag(sync=True)
    peers = traitlets.List(
        traitlets.Dict(),
        help="The others in the room, from the client's awareness: id, name and color.",
    ).tag(sync=True)
    max_height = traitlets.Unicode("32em", help="The view's height limit, in CSS.").tag(sync=True)

    def __init__(self, client: ClientWire, *, max_height: str = "32em", **kwargs: Any) -> None:
        super().__init__(
            room=client.id,
            max_height=max_height,
            status=_current_status(client),
            peers=_peers(client),
            **kwargs,
        )
        self._client = client
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._thread = threading.get_ident()
        self._doc: Doc = client.doc
        self._doc_subscription: Subscription | None = self._doc.observe(self._on_doc_change)
        self._awareness_subscription: str | None = client.awareness.observe(
            self._on_awareness_change
        )
        # The client keeps its callbacks for its lifetime; a weak reference lets a
        # closed widget go.
        client.on_status(_StatusCallback(self))
        self.on_msg(self._on_message)

    @property
    def client(self) -> ClientWire:
        """The client whose room the widget shows."""
        return self._client

    def close(self) -> None:
        """Stop relaying and close the widget's views."""
        if self._doc_subscription is not None:
            self._doc.unobserve(self._doc_subscription)
            self._doc_subscription = None
        if self._awareness_subscription is not None:
            self._client.awareness.unobserve(self._awareness_subscription)
            self._awareness_subscription = None
        super().close()

    def _relay(self, type: MessageType, buffers: list[bytes], **content: Any) -> None:
        if self.comm is not None:
            self.send({"type": type.value, **content}, buffers=buffers)

    def _on_message(self, _widget: Any, content: Any, buffers: list[memoryview]) -> None:
        if not isinstance(content, dict) or not buffers:
            return
        payloads = [bytes(buffer) for buffer in buffers]
        if self._loop is None or threading.get_ident() == self._thread:
            self._handle(content, payloads)
            return
        try:
            self._loop.call_soon_threadsafe(self._handle, content, payloads)
        except RuntimeError:
            log.warning("room %r: the widget's event loop is closed", self.room)

    def _handle(self, content: dict[str, Any], buffers: list[bytes]) -> None:
        try:
            if content.get("type") == MessageType.SYNC:
                update = self._doc.get_update(buffers[0])
                self._relay(
                    MessageType.SYNC,
                    [update, self._doc.get_state()],
                    nonce=content.get("nonce"),
                )
            elif content.get("type") == MessageType.UPDATE:
                if self._client.closed:
                    # The page turns read-only once it hears of the close; an edit sent
                    # before would reach no one: say so rather than keep it unseen.
                    log.warning(
                        "room %r: an edit made in the widget arrived after its client "
                        "closed; it was not applied (the client no longer reaches the room)",
                        self.room,
                    )
                    return
                for buffer in buffers:
                    self._doc.apply_update(buffer)
        except ValueError as exc:
            log.warning("room %r: the widget sent an invalid message: %s", self.room, exc)

    def _on_doc_change(self, event: TransactionEvent) -> None:
        update = event.update
        if update != EMPTY_UPDATE:
            self._relay(MessageType.UPDATE, [update])

    def _on_awareness_change(self, topic: str, changes: tuple[dict[str, Any], Any]) -> None:
        if topic == "change":
            self._show_peers()

    def _show_peers(self) -> None:
        self.peers = _peers(self._client)

    def _on_status(self, status: str) -> None:
        if status == "reset":
            self._follow_new_doc()
        elif status in _STATUSES:
            self.status = status

    def _follow_new_doc(self) -> None:
        """The client replaced its document (the room's history started anew): relay the
        new one, and have the browser replace its copy rather than merge into it."""
        if self._doc_subscription is not None:
            self._doc.unobserve(self._doc_subscription)
        self._doc = self._client.doc
        self._doc_subscription = self._doc.observe(self._on_doc_change)
        # The client's awareness was replaced along with its document.
        self._awareness_subscription = self._client.awareness.observe(self._on_awareness_change)
        self._relay(MessageType.RESET, [self._doc.get_update()])
        self._show_peers()


_STATUSES = {"connected", "synchronized", "disconnected", "closed"}


class _StatusCallback:
    """Forwards a client's status changes to a widget while the widget is open."""

    def __init__(self, widget: RoomWidget) -> None:
        self._widget = weakref.ref(widget)

    def __call__(self, status: str, details: dict[str, Any]) -> None:
        widget = self._widget()
        if widget is not None and widget.comm is not None:
            widget._on_status(status)


def _current_status(client: ClientWire) -> str:
    if client.closed:
        return "closed"
    connected = getattr(client, "connected", None)
    if client.synchronized:
        return "synchronized"
    if connected:
        return "connected"
    return "disconnected" if connected is not None else "connecting"


def _peers(client: ClientWire) -> list[dict[str, Any]]:
    awareness = client.awareness
    return [
        _peer(client_id, state)
        for client_id, state in sorted(awareness.states.items())
        if client_id != awareness.client_id and state
    ]


def _peer(client_id: int, state: dict[str, Any]) -> dict[str, Any]:
    user = state.get("user")
    if not isinstance(user, dict):
        user = {}
    name = user.get("display_name") or user.get("name") or user.get("username")
    color = user.get("color")
    return {
        "id": client_id,
        "name": str(name) if name else f"client {client_id}",
        "color": color if isinstance(color, str) and _COLOR.fullmatch(color) else "",
    }


# The colors a peer may give, as CSS: a hex color, an rgb()/hsl() of plain values, a
# variable (JupyterLab gives its collaborators `var(--jp-collaborator-colorN)`) or a
# name. Anything else (a url(), a second declaration) is the room's data, not a color,
# and is dropped: every page that shows the peer would otherwise load or apply it.
_COLOR = re.compile(r"#[0-9a-fA-F]{3,8}|(?:rgba?|hsla?)\([\w.,%/+\s-]*\)|var\(--[\w-]+\)|[a-zA-Z]+")


def widget_for(client: ClientWire) -> RoomWidget:
    """The widget that ``display(client)`` shows: one per client, made on first use.

    Args:
        client: A connected client.

    Returns:
        The client's widget (a new one if the previous one was closed).
    """
    widget: RoomWidget | None = getattr(client, "_room_widget", None)
    if widget is None or widget.comm is None:
        widget = RoomWidget(client)
        client._room_widget = widget  # type: ignore[attr-defined]
    return widget
