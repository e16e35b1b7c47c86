"""Task groups whose own body's errors reach the caller as themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import create_task_group, get_cancelled_exc_class
from anyio.abc import TaskGroup


@asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """Like ``anyio.create_task_group``, but an exception raised by the block itself
    propagates unwrapped (not inside an ``ExceptionGroup``), so that a user's error
    inside ``async with connect(...)`` surfaces as the error they raised. Errors of
    the group's tasks still arrive as an ``ExceptionGroup``.
    """
    body_error: BaseException | None = None
    async with create_task_group() as tg:
        try:
            yield tg
        except get_cancelled_exc_class():
            raise
        except BaseException as exc:
            body_error = exc
            tg.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
