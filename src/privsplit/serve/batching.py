"""Dynamic batching: concurrent ``POST /v1/infer`` requests for the same head run
as one forward pass of the task network, and each is answered with its own rows.

One consumer task (:class:`Batcher`, started in the app's lifespan) takes the
oldest waiting request, then every other waiting request for the same head, up
to ``batch_samples`` samples. It waits for more, at most ``max_delay`` seconds
after the first request arrived, only while the batch holds fewer requests than
the last batch it ran: clients that were just answered are likely to come back,
and a lone client never waits. The forward pass runs in one worker thread, off
the event loop; requests that arrive meanwhile queue for the next batch.

The queue holds at most ``queue_samples`` samples: a request that does not fit
is refused at once (:class:`QueueFull`, answered 503 with ``Retry-After``),
never left to wait without bound.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .network import TaskNetwork


class QueueFull(Exception):
    """No room in the queue for this request (``kind`` ``"queue_full"``), or the server
    is stopping (``"stopping"``): answer 503."""

    def __init__(self, message: str, kind: str = "queue_full") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _Waiting:
    z: np.ndarray  # (N, *z_shape)
    head: str
    future: asyncio.Future
    arrived: float  # time.monotonic()


class Batcher:
    """Gathers concurrent requests into batches for :meth:`TaskNetwork.predict_many`.

    Args:
        net: the task network.
        batch_samples: most samples in one forward pass (a larger request runs alone).
        max_delay: most seconds a batch waits for more requests after its first (0: never waits).
        queue_samples: most samples waiting; a request beyond it gets :class:`QueueFull`.
        on_batch: called with the samples of each forward pass (the metrics).

    Example:
        >>> batcher = Batcher(net, 64, 0.002, 256)  # doctest: +SKIP
        >>> answer = await batcher.infer(z, "task")  # doctest: +SKIP
    """

    def __init__(self, net: TaskNetwork, batch_samples: int, max_delay: float, queue_samples: int,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.net = net
        self.batch_samples = batch_samples
        self.max_delay = max_delay
        self.queue_samples = queue_samples
        self.on_batch = on_batch
        self.batches = 0  # forward passes run
        self.requests = 0  # requests answered by them (with their 422s)
        self._waiting: deque[_Waiting] = deque()
        self._queued = 0  # samples in self._waiting
        self._expect = 1  # requests in the last batch: how many a forming batch waits for
        self._task: asyncio.Task | None = None
        self._stopping = False

    @property
    def queued(self) -> int:
        """Samples waiting for a batch (not those in the forward pass now)."""
        return self._queued

    def start(self) -> None:
        """Start the consumer on the running event loop (the app's lifespan calls it)."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="privsplit-batch")
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="privsplit-batcher")

    async def stop(self) -> None:
        """Answer what is queued, refuse what comes from now on, and end the consumer."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await self._task
        self._task = None
        self._pool.shutdown(wait=True)

    async def infer(self, z: np.ndarray, head: str) -> dict[str, Any]:
        """The answer for ``z`` (N, *z_shape), as :meth:`TaskNetwork.predict` gives it.

        Raises:
            QueueFull: the queue has no room for ``z`` or the server is stopping (answer 503).
            WireFormatError: the network's output for ``z`` is not finite (422).
        """
        if self._task is None:  # served without a lifespan (an ASGI host that sends none)
            self.start()
        if self._stopping:
            raise QueueFull("the server is stopping; try again later", "stopping")
        if self._queued + len(z) > self.queue_samples:
            raise QueueFull(f"server busy: {self._queued} samples are waiting for the task network "
                            f"(at most {self.queue_samples}); try again later")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(z, head, future, time.monotonic()))
        self._queued += len(z)
        self._wake.set()
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
            first = self._waiting[0]
            batch: list[_Waiting] = []
            samples = self._collect(batch, first.head, 0)
            deadline = first.arrived + self.max_delay
            while len(batch) < self._expect and samples < self.batch_samples and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    pass
                samples = self._collect(batch, first.head, samples)
            if not batch:  # only requests whose clients are gone
                continue
            self._expect = len(batch)
            try:
                answers: list[Any] = await loop.run_in_executor(
                    self._pool, self.net.predict_many, [w.z for w in batch], first.head)
            except Exception as e:  # noqa: BLE001 - the forward pass itself failed: every request of it sees why
                answers = [e] * len(batch)
            self.batches += 1
            self.requests += len(batch)
            if self.on_batch is not None:
                self.on_batch(samples)
            for w, answer in zip(batch, answers):
                if w.future.done():  # its client went away meanwhile
                    continue
                if isinstance(answer, Exception):
                    w.future.set_exception(answer)
                else:
                    w.future.set_result(answer)

    def _collect(self, batch: list[_Waiting], head: str, samples: int) -> int:
        """Move the waiting requests for ``head`` that fit into ``batch``, oldest first;
        the samples in the batch. The first one always fits (a larger request runs alone)."""
        kept: deque[_Waiting] = deque()
        while self._waiting:
            w = self._waiting.popleft()
            n = len(w.z)
            if w.future.done():  # cancelled: its client is gone
                self._queued -= n
            elif w.head == head and (not batch or samples + n <= self.batch_samples):
                batch.append(w)
                samples += n
                self._queued -= n
            else:
                kept.append(w)
        self._waiting = kept
        return samples
