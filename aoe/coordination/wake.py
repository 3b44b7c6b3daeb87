"""Wake-ups across processes: one pub/sub connection per process, a callback per channel.

A settle, release or header reading in any process publishes on its key's channel (from
inside the script, so no extra round trip); every process waiting on that key wakes and
asks again. Messages are hints, never the truth: a waiter that misses one (the pub/sub
connection is being re-made, Redis restarted) asks again after at most ``WAKE_POLL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from aoe.coordination.connection import Connection

__all__ = ["Wakeups"]

#: Wait before re-making a pub/sub connection that failed; waiters poll meanwhile.
RESUBSCRIBE_S: Final = 1.0


class Wakeups:
    """Calls each channel's callbacks when a message arrives on it."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._subscribed = asyncio.Event()

    def subscribe(self, channel: str, callback: Callable[[], None]) -> None:
        self._callbacks.setdefault(channel, []).append(callback)
        self._changed.set()
        self._subscribed.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="aoe-wake")

    def unsubscribe(self, channel: str, callback: Callable[[], None]) -> None:
        callbacks = self._callbacks.get(channel, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            self._callbacks.pop(channel, None)
        self._changed.set()

    async def _listen(self) -> None:
        subscribed: set[str] = set()
        while self._callbacks:
            try:
                if self._pubsub is None:
                    self._pubsub = self._conn.client.pubsub(ignore_subscribe_messages=True)
                    subscribed = set()
                pubsub = self._pubsub
                if self._changed.is_set():
                    self._changed.clear()
                    wanted = set(self._callbacks)
                    if wanted - subscribed:
                        await pubsub.subscribe(*(wanted - subscribed))
                    if subscribed - wanted:
                        await pubsub.unsubscribe(*(subscribed - wanted))
                    subscribed = wanted
                    if not self._changed.is_set():
                        self._subscribed.set()
                if not subscribed:
                    continue
                message = await pubsub.get_message(timeout=0.5)
                if message is None or message.get("type") != "message":
                    continue
                raw = message["channel"]
                channel = raw.decode() if isinstance(raw, bytes) else str(raw)
                for callback in list(self._callbacks.get(channel, ())):
                    callback()
            except (RedisError, OSError):
                await self._drop()
                await asyncio.sleep(RESUBSCRIBE_S)  # waiters poll meanwhile
                self._changed.set()
        await self._drop()

    async def ready(self) -> None:
        """Until every channel subscribed so far is listened to (messages sent before may
        be missed; waiters then ask again within ``WAKE_POLL_S``)."""
        await self._subscribed.wait()

    async def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def aclose(self) -> None:
        self._callbacks.clear()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop()
