"""The server API of JupyterLab's collaborative front end, served on the server's rooms.

JupyterLab's real-time collaboration front end (``jupyter-docprovider``,
``jupyter-collaboration-ui``) asks ``PUT {base_url}api/collaboration/session/{path}`` for
a file's id and a session id, then joins the websocket
``{base_url}api/collaboration/room/{format}:{type}:{fileId}``: the y-websocket protocol
plus RAW save requests. The room behind that socket is the file's room in
[FileRooms][jupyter_rooms.jupyter.filerooms.FileRooms], the same one a kernel joins at
``api/rooms/{path}``: one document, one history and one save schedule per file, whichever
door a client came in by.

The session id a page gets is the room's epoch. The page keeps it in its socket's URL
and gives it again each time it reconnects (after a server restart, say): the same epoch
means the room's history is the page's and the two merge; another epoch means the room
started afresh, and the page is told to reload (close code 1003) instead of merging an
unrelated history into it.

The document timeline (``api/collaboration/timeline/{path}``, ``undo_redo``) is the
room's history as its update log keeps it: the page connects its document to a copy
(a fork, served as a room by the fork's id) that steps back and forth through it, and
restoring writes the version on screen into the room (see ``timeline``). Extensions
fork a room, edit the fork and merge it back through ``api/collaboration/fork`` (see
``forks``).

Any other room id (``JupyterLab:globalAwareness``) is a room bound to no file, for
presence only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..protocol import MessageType
from ..websocket import HandlerChannel, fit_close_reason
from .documents import kind_for_path
from .filerooms import FileRooms, ForkError, RoomOpenError, RoomPathError
from .forks import FORK_EVENTS, Branch
from .handlers import SETTINGS_KEY, RoomSocketHandler

__all__ = [
    "CLOSE_BAD_REQUEST",
    "CLOSE_NOT_FOUND",
    "CLOSE_SERVER_ERROR",
    "CLOSE_SESSION",
    "CollaborationRoomHandler",
    "CollaborationSessionHandler",
    "ForkHandler",
    "TimelineHandler",
    "UndoRedoHandler",
    "collaboration_handlers",
]

# Close codes JupyterLab's front end knows: it gives up on the document (and says why)
# after the first three, and offers to reload the page after the last.
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4400
CLOSE_SERVER_ERROR = 4500
CLOSE_SESSION = 1003

# The kind of document each (type, format) of the front end's asks for.
_KINDS = {("notebook", "json"): "notebook", ("file", "text"): "text", ("file", "base64"): "blob"}

# Close reasons travel in a control frame: at most 123 bytes.
_MAX_SESSION_ID = 40


def _file_id_manager(handler: Any) -> Any:
    manager = handler.settings.get("file_id_manager")
    if manager is None:
        raise web.HTTPError(
            503,
            "file ids are not available: enable the jupyter_server_fileid extension "
            "(jupyter server extension enable jupyter_server_fileid)",
        )
    return manager


def _api_path(path: str) -> str:
    """A path of the contents API, relative to the root: the front end's may start with
    ``/`` (its document timeline asks for a session so), which means the root."""
    return path.lstrip("/")


def _rooms(handler: Any) -> FileRooms:
    rooms: FileRooms = handler.settings[SETTINGS_KEY]
    return rooms


@contextmanager
def _refusals() -> Iterator[None]:
    """The rooms' refusals as HTTP errors."""
    try:
        yield
    except ForkError as exc:
        raise web.HTTPError(exc.status, exc.message) from None
    except RoomOpenError as exc:
        raise web.HTTPError(400, str(exc)) from None
    except RuntimeError as exc:
        # The rooms are not running (the server is stopping).
        raise web.HTTPError(503, str(exc)) from None


async def _open_as(rooms: FileRooms, room_id: str, kind: str) -> None:
    """Open a file's room, which must hold the kind of document asked for."""
    await rooms.start()
    room = await rooms.visit(room_id)
    if room.kind.name != kind:
        raise web.HTTPError(400, f"{room_id} is a {room.kind.name} file, not {kind}")


async def _file_of(handler: APIHandler, path: str) -> tuple[str, str, bool]:
    """The room id of the file at ``path`` (an API path), its file id, and whether the
    id was given just now; HTTP errors for a path that cannot have a room or no file."""
    try:
        room_id = await _rooms(handler).resolve(_api_path(path))
    except RoomPathError as exc:
        raise web.HTTPError(exc.status, exc.message) from None
    if not await ensure_async(handler.contents_manager.file_exists(room_id)):
        raise web.HTTPError(404, f"file {room_id!r} does not exist")
    ids = _file_id_manager(handler)
    file_id = ids.get_id(room_id)
    created = file_id is None
    if created:
        file_id = ids.index(room_id)
        if file_id is None:
            raise web.HTTPError(404, f"file {room_id!r} does not exist")
    return room_id, file_id, created


class CollaborationSessionHandler(APIHandler):
    """``PUT {base_url}api/collaboration/session/{path}``: a file's id and a session id.

    The body is ``{"format": ..., "type": ...}``; the answer repeats them with
    ``fileId`` (stable across renames) and ``sessionId`` (the room's epoch). The file's
    room is opened: in the background when its epoch is known before it has loaded (a
    room that starts afresh), so that the page sets up while the server reads the file;
    a file that turns out unreadable is then told on the room's socket (4400), which
    the page shows as a load error (it only logs a failed session request).
    """

    auth_resource = "contents"

    @web.authenticated
    @authorized
    async def put(self, path: str) -> None:
        """Answer a document session for the file at ``path`` (URL-decoded)."""
        body = self.get_json_body()
        if not isinstance(body, dict):
            raise web.HTTPError(400, 'the body must be {"format": ..., "type": ...}')
        file_format, file_type = body.get("format"), body.get("type")
        if not isinstance(file_format, str) or not isinstance(file_type, str):
            raise web.HTTPError(400, 'the body must be {"format": ..., "type": ...} (strings)')
        room_id, file_id, created = await _file_of(self, path)
        rooms = _rooms(self)
        with _refusals():
            await rooms.start()
            epoch = await rooms.session_epoch(room_id)
        self.set_status(201 if created else 200)
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "format": file_format,
                    "type": file_type,
                    "fileId": file_id,
                    "sessionId": epoch,
                }
            )
        )


def _kind_named(file_format: str, file_type: str) -> str:
    """The kind of document a front end's format and type name; 400 for any other."""
    kind = _KINDS.get((file_type, file_format))
    if kind is None:
        raise web.HTTPError(
            400, f"unknown document type {file_type[:40]!r}:{file_format[:40]!r} (format, type)"
        )
    return kind


def _query_kind(handler: APIHandler) -> tuple[str, str, str]:
    """The ``format`` and ``type`` query arguments, and the kind of document they name."""
    file_format = handler.get_query_argument("format", "")
    file_type = handler.get_query_argument("type", "")
    return file_format, file_type, _kind_named(file_format, file_type)


async def _document_room(handler: Any, document: str) -> tuple[str, str]:
    """The room id of the file a front end's document name (``format:type:fileId``)
    names, and the kind of document it asks for. HTTP errors: 400 for a malformed name
    or an unknown type, 404 for an unknown id, the path's own refusal (400, 403, 404)
    for a file that cannot have a room, 503 without file ids."""
    parts = document.split(":", 2)
    if len(parts) != 3:
        raise web.HTTPError(400, f"a document is named format:type:fileId, not {document[:80]!r}")
    file_format, file_type, file_id = parts
    kind = _kind_named(file_format, file_type)
    path = _file_id_manager(handler).get_path(file_id)
    if path is None:
        raise web.HTTPError(404, f"no file has the id {file_id[:40]!r}")
    try:
        return await _rooms(handler).resolve(path), kind
    except RoomPathError as exc:
        raise web.HTTPError(exc.status, exc.message) from None


class TimelineHandler(APIHandler):
    """``GET {base_url}api/collaboration/timeline/{path}?format=...&type=...``: a file's
    timeline, for JupyterLab's document timeline.

    The answer is ``{"roomId", "timestamps", "forkRoom", "sessionId"}``: the file's room
    as the page names it, when each step of its history was made (seconds since the
    epoch, oldest first), the id of the fork to connect to
    (``api/collaboration/room/{forkRoom}``), which is at the newest step, and the room's
    epoch. 404 for no such file, 409 when this server keeps no history of the room
    (one shared through Redis and saved by another server), 503 when too many are open.
    """

    auth_resource = "contents"

    @web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        """Fork the room of the file at ``path`` and answer its timeline."""
        file_format, file_type, kind = _query_kind(self)
        room_id, file_id, _ = await _file_of(self, path)
        rooms = _rooms(self)
        with _refusals():
            await _open_as(rooms, room_id, kind)
            fork = await rooms.timeline(room_id)
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "roomId": f"{file_format}:{file_type}:{file_id}",
                    "timestamps": fork.times,
                    "forkRoom": fork.id,
                    "sessionId": fork.epoch,
                }
            )
        )


class UndoRedoHandler(APIHandler):
    """``PUT {base_url}api/collaboration/undo_redo/{format}:{type}:{fileId}?action=...
    &steps=...&forkRoom=...``: move a timeline's fork, or restore its version.

    ``undo`` goes back ``steps`` steps (never before the first), ``redo`` forward (never
    past the newest): the page connected to the fork sees its document change. The
    answer says how far it went: ``{"code": 200, "status": "undone" | "redone", "step",
    "steps"}``, with ``error`` when it could not move at all. ``restore`` makes the
    fork's version the room's (``{"code": 200, "status": ...}``); JupyterLab then
    reconnects the page to the room. 404 for an unknown fork or one of another file,
    409 for a fork restored already or of an earlier epoch.
    """

    auth_resource = "contents"

    @web.authenticated
    @authorized
    async def put(self, document: str) -> None:
        """Move the fork, or restore it."""
        action = self.get_query_argument("action", "")
        if action not in ("undo", "redo", "restore"):
            raise web.HTTPError(400, "action must be undo, redo or restore")
        try:
            steps = int(self.get_query_argument("steps", "0"))
        except ValueError:
            raise web.HTTPError(400, "steps must be a whole number") from None
        if steps < 0:
            raise web.HTTPError(400, "steps must not be negative")
        rooms = _rooms(self)
        fork = rooms.timeline_fork(self.get_query_argument("forkRoom", ""))
        if fork is None:
            raise web.HTTPError(
                404, "no such timeline (it closes a minute after its page left): open it again"
            )
        try:
            room_id, _ = await _document_room(self, document)
        except web.HTTPError as exc:
            if exc.status_code >= 500:
                raise
            room_id = None
        if room_id != fork.room_id:
            raise web.HTTPError(
                404, f"the timeline {fork.id} is not one of the document {document[:80]}"
            )
        if action == "restore":
            with _refusals():
                await rooms.restore(fork)
            self.finish({"code": 200, "status": f"{fork.room_id}: this version is restored"})
            return
        if fork.restored:
            raise web.HTTPError(409, "this version was restored already: open the timeline again")
        moved = fork.move(-steps if action == "undo" else steps)
        reply: dict[str, Any] = {
            "code": 200,
            "status": "undone" if action == "undo" else "redone",
            "step": fork.step,
            "steps": len(fork.times),
        }
        if steps and not moved:
            reply["error"] = f"no step {'before' if action == 'undo' else 'after'} this one"
        self.finish(reply)


class _YjsChannel(HandlerChannel):
    """A channel to a plain Yjs client: our CONTROL notices stay out of it (Yjs clients
    log every message type they do not know as an error). What they tell reaches
    JupyterLab another way: the epoch through the session id, saves through the
    document's ``state`` map.

    Changes of the page that the room cannot apply are reported to it (a RAW
    ``{"type": "conflict"}``, for which JupyterLab shows a dialog) instead of closing it.
    """

    reports_conflicts = True

    async def send(self, message: bytes) -> None:
        if message[:1] == bytes((MessageType.CONTROL,)):
            return
        await super().send(message)

    def send_nowait(self, message: bytes) -> bool:
        if message[:1] == bytes((MessageType.CONTROL,)):
            # Dropped, which counts as done for the room.
            return True
        return super().send_nowait(message)


class CollaborationRoomHandler(RoomSocketHandler):
    """``{base_url}api/collaboration/room/{format}:{type}:{fileId}``: a JupyterLab page's
    connection to a file's room; any other id is a presence-only room.

    Problems found before the socket opens are told once it is open, with the close
    codes the front end knows: 4404 (no such file), 4400 (a file that cannot be opened
    as asked), 4500 (a server error), 1003 (the room's epoch is not the page's session:
    reload).
    """

    transient = False
    _refusal: tuple[int, str] | None = None

    def _refuse(self, code: int, reason: str) -> None:
        self._refusal = (code, reason)

    async def _locate(self, path: str) -> None:
        if path.count(":") < 2:
            self.transient = True
            self.room_id = path
            return
        try:
            self.room_id, kind = await _document_room(self, path)
        except web.HTTPError as exc:
            code = {404: CLOSE_NOT_FOUND, 503: CLOSE_SERVER_ERROR}.get(
                exc.status_code, CLOSE_BAD_REQUEST
            )
            self._refuse(code, exc.log_message or f"refused ({exc.status_code})")
            return
        session = self.get_query_argument("sessionId", "")
        try:
            if (
                session
                and session == self.rooms.promised_epoch(self.room_id)
                and kind == "notebook"
                and kind_for_path(self.room_id).name == "notebook"
            ):
                # The notebook's room is opening for this page's session (the epoch
                # and kind are known): the socket is taken now and served once the
                # room is open, so that the page's sync request waits in it rather
                # than the page waiting for the server to take the socket. A room that
                # fails to open closes it with 4400 and the reason.
                return
            room = await self.rooms.visit(self.room_id)
        except RoomPathError as exc:
            code = CLOSE_NOT_FOUND if exc.status == 404 else CLOSE_BAD_REQUEST
            self._refuse(code, exc.message)
            return
        except RoomOpenError as exc:
            self.log.warning("room for %s refused: %s", self.room_id, exc)
            self._refuse(CLOSE_BAD_REQUEST, str(exc))
            return
        except Exception as exc:
            self.log.exception("room for %s", self.room_id)
            self._refuse(CLOSE_SERVER_ERROR, f"server error: {exc}")
            return
        if room.kind.name != kind:
            self._refuse(
                CLOSE_BAD_REQUEST, f"{self.room_id} is a {room.kind.name} file, not {kind}"
            )
            return
        if session and session != room.epoch:
            # The page's document comes from another history: merging would duplicate.
            self.log.info("room %r: a page of an earlier epoch is asked to reload", self.room_id)
            reason = {
                "reason": "unknown_session",
                "sessionId": session[:_MAX_SESSION_ID],
                "reloadable": True,
            }
            self._refuse(CLOSE_SESSION, json.dumps(reason, separators=(",", ":")))

    def _channel(self) -> HandlerChannel:
        return _YjsChannel(self, self.room_id)

    def _serve(self, channel: HandlerChannel) -> None:
        if self._refusal is not None:
            code, reason = self._refusal
            self.close(code, fit_close_reason(reason))
            return
        if self.transient:
            self.rooms.serve_transient(self.room_id, channel)
        else:
            self.rooms.serve(self.room_id, channel, read_only=self.read_only)


class ForkHandler(APIHandler):
    """``{base_url}api/collaboration/fork/{id}``: forks of a file's room for extensions
    (see ``forks``).

    - ``PUT fork/{format}:{type}:{fileId}`` with ``{"title", "description",
      "synchronize"}`` (all optional) makes a fork and answers 201 with ``{"sessionId",
      "fork_roomid", "fork_info"}``; clients join it at ``api/collaboration/room/{fork_roomid}``.
    - ``GET fork/{format}:{type}:{fileId}`` answers the room's forks,
      ``{fork_roomid: fork_info}``.
    - ``DELETE fork/{fork_roomid}?merge=true`` merges the fork into its room and
      deletes it (``merge=false``, or none: deletes it only).

    Making and deleting forks is told on the server's event stream (``FORK_EVENTS``).
    """

    auth_resource = "contents"

    def _tell(self, branch: Branch, action: str) -> None:
        user = self.current_user
        data = {
            "username": getattr(user, "username", None) or "",
            "fork_roomid": branch.id,
            "fork_info": branch.info,
            "action": action,
        }
        logger = self.settings.get("event_logger")
        if logger is not None and FORK_EVENTS in logger.schemas.schema_ids:
            logger.emit(schema_id=FORK_EVENTS, data=data)

    @web.authenticated
    @authorized
    async def get(self, document: str) -> None:
        """Answer the forks of the room that ``document`` names."""
        room_id, _ = await _document_room(self, document)
        self.finish({branch.id: branch.info for branch in _rooms(self).forks_of(room_id)})

    @web.authenticated
    @authorized
    async def put(self, document: str) -> None:
        """Fork the room that ``document`` names."""
        body = self.get_json_body() or {}
        if not isinstance(body, dict):
            raise web.HTTPError(400, 'the body must be {"title", "description", "synchronize"}')
        title, description = body.get("title") or "", body.get("description") or ""
        synchronize = body.get("synchronize", False)
        if not isinstance(title, str) or not isinstance(description, str):
            raise web.HTTPError(400, "title and description must be strings")
        if not isinstance(synchronize, bool):
            raise web.HTTPError(400, "synchronize must be true or false")
        room_id, kind = await _document_room(self, document)
        rooms = _rooms(self)
        info = {
            "root_roomid": document,
            "synchronize": synchronize,
            "title": title,
            "description": description,
        }
        with _refusals():
            await _open_as(rooms, room_id, kind)
            branch = await rooms.create_fork(room_id, info)
        self._tell(branch, "create")
        self.set_status(201)
        self.finish({"sessionId": branch.epoch, "fork_roomid": branch.id, "fork_info": branch.info})

    @web.authenticated
    @authorized
    async def delete(self, fork_id: str) -> None:
        """Delete a fork, merging it into its room with ``?merge=true``."""
        merge = self.get_query_argument("merge", "false")
        if merge not in ("true", "false"):
            raise web.HTTPError(400, "merge must be true or false")
        with _refusals():
            branch = await _rooms(self).delete_fork(fork_id, merge=merge == "true")
        self._tell(branch, "delete")
        self.finish({"code": 200, "fork_roomid": branch.id, "merged": merge == "true"})


def collaboration_handlers() -> list[tuple[str, type]]:
    """The routes of the collaboration API, relative to the base URL."""
    return [
        (r"/api/collaboration/session/(.*)", CollaborationSessionHandler),
        (r"/api/collaboration/room/(.*)", CollaborationRoomHandler),
        (r"/api/collaboration/timeline/(.*)", TimelineHandler),
        (r"/api/collaboration/undo_redo/(.*)", UndoRedoHandler),
        (r"/api/collaboration/fork/(.*)", ForkHandler),
    ]
