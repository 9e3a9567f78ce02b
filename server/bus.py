"""Fan-out of stored events to live subscribers (SSE and WebSocket clients, sinks).

Each subscriber has a bounded queue. Publishing never waits: a subscriber whose queue is full is too
slow and is dropped (logged, its iteration ends), so one stuck client cannot hold up the others or
grow memory. Dropping loses nothing for good: events are stored before they are published, and a
client that reconnects with the last id it saw is replayed the rest from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from cliplive.server.store import StoredEvent

log = logging.getLogger(__name__)

QUEUE_SIZE = 1024


class Subscription:
    def __init__(self, bus: EventBus, name: str, size: int):
        self.bus, self.name = bus, name
        self.queue: asyncio.Queue[StoredEvent | None] = asyncio.Queue(size)  # None: the subscription ended
        self.ended: str | None = None  # why it ended

    async def get(self) -> StoredEvent | None:
        """The next event, or None once the subscription has ended."""
        return None if self.ended and self.queue.empty() else await self.queue.get()

    async def __aiter__(self) -> AsyncIterator[StoredEvent]:
        while (event := await self.get()) is not None:
            yield event

    def close(self) -> None:
        self.bus.unsubscribe(self)

    def _end(self, reason: str) -> None:
        """Wake the consumer with the end marker; what was queued is given up when the queue is full."""
        self.ended = reason
        if self.queue.full():
            while not self.queue.empty():
                self.queue.get_nowait()
        self.queue.put_nowait(None)


class EventBus:
    def __init__(self, queue_size: int = QUEUE_SIZE):
        self.queue_size = queue_size
        self.subscribers: set[Subscription] = set()
        self.dropped = 0  # subscribers dropped for being too slow

    def subscribe(self, name: str) -> Subscription:
        subscription = Subscription(self, name, self.queue_size)
        self.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)

    def publish(self, event: StoredEvent) -> None:
        for subscription in list(self.subscribers):
            try:
                subscription.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1
                self.subscribers.discard(subscription)
                log.warning("dropping slow subscriber %s: %d events queued unread (a client may resume with Last-Event-ID)",
                            subscription.name, subscription.queue.qsize())
                subscription._end("too slow")

    def close(self) -> None:
        """End every subscription (at shutdown)."""
        for subscription in list(self.subscribers):
            subscription._end("server shutting down")
        self.subscribers.clear()
