"""Rooms kept in update logs: what a standalone server needs to survive restarts."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from anyio import TASK_STATUS_IGNORED, sleep_forever
from anyio.abc import TaskStatus

from .room import Room
from .wire import connect

__all__ = ["LogRoom", "log_path"]


def log_path(directory: str | os.PathLike[str], id: str) -> Path:
    """The log file of a room: its id, percent-encoded (so no id can leave the directory).

    Args:
        directory: Where the logs are.
        id: The room's id.

    Returns:
        The path of the room's log.
    """
    return Path(directory) / f"{quote(id, safe='') or '%00'}.ylog"


class LogRoom(Room):
    """A room whose document lives in an update log in a directory.

    Every change is appended to the room's log as it happens, so a server that is killed
    loses nothing it had received; a room opened again starts from its log. The log is
    compacted each time the room opens.

    Args:
        id: The room's id.
        directory: Where the logs are.
        kwargs: Further options of [Room][jupyter_rooms.Room].
    """

    def __init__(self, id: str, *, directory: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(id, **kwargs)
        self.path = log_path(directory, id)

    @classmethod
    def factory(cls, directory: str | os.PathLike[str]) -> Callable[[str], Room]:
        """A ``room_factory`` whose rooms keep their logs in ``directory``.

        Args:
            directory: Where the logs are.

        Returns:
            The factory.
        """
        return functools.partial(cls, directory=directory)

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        await self.task_group.start(self._keep_log)
        await super().run(task_status=task_status)

    async def _keep_log(self, *, task_status: TaskStatus[None]) -> None:
        async with connect("file", doc=self.doc, path=self.path, squash=True):
            task_status.started()
            await sleep_forever()
