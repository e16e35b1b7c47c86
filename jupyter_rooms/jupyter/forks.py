"""Forks of file rooms that extensions make, edit and merge back (``api/collaboration/fork``).

An extension (an assistant that suggests edits, say) asks for a fork of a file's room: a
copy of its document, served as a room of its own under the fork's id, where it and
anyone it invites edit without touching the file. A fork made to follow its room gets
the room's changes as they are made (not the other way round). Deleting the fork may
merge it back: what was changed in the fork is applied to the room, merged with what
changed there meanwhile. Forks live in the server's memory until they are deleted (or
the server stops); the room stays open while it has forks.

Pages hear of forks made and deleted through the server's event stream, under the
event schema JupyterLab's fork manager listens to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc

__all__ = ["FORK_EVENTS", "FORK_EVENT_SCHEMA", "Branch"]

# The schema id JupyterLab's fork manager (jupyter-docprovider) listens for.
FORK_EVENTS = "https://schema.jupyter.org/jupyter_collaboration/fork/v1"

FORK_EVENT_SCHEMA: dict[str, Any] = {
    "$id": FORK_EVENTS,
    "version": "1",
    "title": "Forks of collaborative documents",
    "description": "A fork of a document's room was made or deleted.",
    "type": "object",
    "required": ["username", "fork_roomid", "fork_info", "action"],
    "properties": {
        "username": {
            "type": "string",
            "title": "who made or deleted the fork",
            "description": "The name of the user who asked.",
        },
        "fork_roomid": {
            "type": "string",
            "title": "the fork's id",
            "description": "The id of the fork's room.",
        },
        "fork_info": {
            "type": "object",
            "title": "the fork",
            "description": "The room it forks (root_roomid), whether it follows that "
            "room's changes (synchronize), its title and description.",
        },
        "action": {
            "enum": ["create", "delete"],
            "title": "what happened",
            "description": "create: the fork was made; delete: it was deleted.",
        },
    },
}


@dataclass(eq=False)
class Branch:
    """A fork of a room made for an extension.

    Attributes:
        id: The fork's id, which is the id of the room that serves it.
        room_id: The id of the file room it forks.
        epoch: That room's epoch when the fork was made.
        doc: The fork's document.
        info: What the fork's maker said of it, as the API answers it: ``root_roomid``
            (the room as the front end names it), ``synchronize``, ``title``,
            ``description``.
    """

    id: str
    room_id: str
    epoch: str
    doc: Doc
    info: dict[str, Any]
    _stop_following: Callable[[], None] | None = field(default=None, repr=False)

    def follow(self, room_doc: Doc) -> None:
        """Apply the room's changes to the fork as they are made, until ``close``."""
        subscription = room_doc.observe(lambda event: self.doc.apply_update(event.update))
        self._stop_following = lambda: room_doc.unobserve(subscription)

    def close(self) -> None:
        """Stop following the room."""
        if self._stop_following is not None:
            self._stop_following()
            self._stop_following = None
