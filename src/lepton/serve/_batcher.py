"""Micro-batching: requests that arrive close together run through the model as one batch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

Records = Sequence[Any]
#: ``run(jobs)`` → one result per job, in order (runs in the batcher's worker thread).
RunBatch = Callable[[Sequence["Job"]], list[Any]]


class BatcherStopped(RuntimeError):
    """The batcher is not running (not started yet, or shutting down)."""


@dataclass
class Job:
    """One request waiting in the queue: its records, the tasks it asks for, its future."""

    records: Records
    tasks: list[str]
    future: asyncio.Future[Any] = field(repr=False)


@dataclass
class BatchStats:
    """Counters since the start (for ``/metadata`` and the load benchmark)."""

    requests: int = 0
    records: int = 0
    batches: int = 0
    largest_batch: int = 0

    def to_dict(self) -> dict[str, Any]:
        mean = self.records / self.batches if self.batches else 0.0
        return {
            "requests": self.requests,
            "records": self.records,
            "batches": self.batches,
            "largest_batch_records": self.largest_batch,
            "mean_batch_records": round(mean, 2),
        }


class MicroBatcher:
    """Collects concurrent requests into batches and runs each batch in one worker thread.

    The first request that finds the batcher idle opens a batch; requests arriving within
    ``window_s`` of it join while the batch holds at most ``max_records`` records (a request
    larger than that runs alone). While a batch runs in the worker thread, new requests queue
    up and form the next batch at once, so batches grow with concurrency even with
    ``window_s=0``.

    ``run(jobs)`` must return one result per job. When it raises, each job of the batch is run
    alone so that one bad request does not fail the others.

    Examples
    --------
    >>> async def demo():
    ...     batcher = MicroBatcher(lambda jobs: [len(j.records) for j in jobs], 0.01, 64)
    ...     await batcher.start()
    ...     out = await asyncio.gather(*(batcher.submit([0] * i, []) for i in (1, 2, 3)))
    ...     await batcher.stop()
    ...     return out, batcher.stats.batches
    >>> asyncio.run(demo())
    ([1, 2, 3], 1)
    """

    def __init__(
        self,
        run: RunBatch,
        window_s: float = 0.002,
        max_records: int = 256,
        setup: Callable[[], None] | None = None,
    ) -> None:
        if window_s < 0:
            raise ValueError("the batching window must be >= 0 seconds")
        if max_records < 1:
            raise ValueError("the maximum batch must hold at least one record")
        self.run = run
        self.window_s = float(window_s)
        self.max_records = int(max_records)
        self.stats = BatchStats()
        self._setup = setup
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the collecting loop and the worker thread (in the running event loop)."""
        if self.running:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="lepton-batch", initializer=self._setup
        )
        self._task = asyncio.create_task(self._loop(), name="lepton-micro-batcher")

    async def stop(self) -> None:
        """Stop collecting; waiting requests fail with :class:`BatcherStopped`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(BatcherStopped("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` in the worker thread (between batches), e.g. a warm-up prediction."""
        assert self._executor is not None, "start() the batcher first"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def submit(self, records: Records, tasks: list[str]) -> Any:
        """Queue one request and wait for its result."""
        if not self.running or self._queue is None:
            raise BatcherStopped("the micro-batcher is not running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Job(records, tasks, future))
        return await future

    async def _loop(self) -> None:
        assert self._queue is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        queue = self._queue
        carry: Job | None = None
        while True:
            first = carry if carry is not None else await queue.get()
            carry = None
            batch, size = [first], len(first.records)
            deadline = loop.time() + self.window_s
            while size < self.max_records:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            job = await queue.get()
                    except TimeoutError:
                        break
                if size + len(job.records) > self.max_records:
                    carry = job
                    break
                batch.append(job)
                size += len(job.records)
            live = [j for j in batch if not j.future.done()]  # a client may have gone away
            if not live:
                continue
            self.stats.requests += len(live)
            self.stats.records += sum(len(j.records) for j in live)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, size)
            outcomes = await loop.run_in_executor(self._executor, self._run_safely, live)
            for job, (ok, value) in zip(live, outcomes, strict=True):
                if job.future.done():
                    continue
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)

    def _run_safely(self, jobs: list[Job]) -> list[tuple[bool, Any]]:
        try:
            results = self.run(jobs)
            if len(results) != len(jobs):
                raise RuntimeError("the batch function returned the wrong number of results")
            return [(True, r) for r in results]
        except Exception as e:
            if len(jobs) == 1:
                return [(False, e)]
        outcomes: list[tuple[bool, Any]] = []
        for job in jobs:  # one request at a time, so that only the bad one fails
            try:
                outcomes.append((True, self.run([job])[0]))
            except Exception as e:
                outcomes.append((False, e))
        return outcomes
