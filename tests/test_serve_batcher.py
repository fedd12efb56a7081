"""The micro-batcher: queued requests run as one batch, within a record budget, in isolation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lepton.serve import MicroBatcher
from lepton.serve._batcher import BatcherStopped, Job


class Recorder:
    """A batch function that records each batch and can block until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, jobs: list[Job]) -> list[object]:
        self.release.wait(timeout=30)
        self.batches.append([len(j.records) for j in jobs])
        out: list[object] = []
        for j in jobs:
            if "boom" in j.tasks:
                raise ValueError("bad request")
            out.append(sum(j.records))
        return out


def run(coro):
    return asyncio.run(coro)


def test_requests_queued_together_form_one_batch() -> None:
    rec = Recorder()

    async def main():
        batcher = MicroBatcher(rec, window_s=0.0, max_records=100)
        await batcher.start()
        rec.release.clear()  # hold the worker: the first batch blocks, the rest queue up
        first = asyncio.ensure_future(batcher.submit([1], []))
        while not rec.batches and batcher.stats.batches == 0:
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(batcher.submit([i, i], [])) for i in range(10)]
        await asyncio.sleep(0.01)
        rec.release.set()
        results = await asyncio.gather(first, *rest)
        await batcher.stop()
        return results, batcher.stats

    results, stats = run(main())
    assert results == [1] + [2 * i for i in range(10)]
    assert rec.batches == [[1], [2] * 10]  # the ten waiting requests ran as one batch
    assert stats.batches == 2 and stats.requests == 11 and stats.records == 21


def test_batches_respect_the_record_budget() -> None:
    rec = Recorder()

    async def main():
        batcher = MicroBatcher(rec, window_s=0.05, max_records=8)
        await batcher.start()
        sizes = [3, 3, 3, 3, 20, 1]
        results = await asyncio.gather(*(batcher.submit([1] * n, []) for n in sizes))
        await batcher.stop()
        return results

    assert run(main()) == [3, 3, 3, 3, 20, 1]
    assert all(sum(b) <= 8 or b == [20] for b in rec.batches)  # a larger request runs alone
    assert sorted(n for b in rec.batches for n in b) == [1, 3, 3, 3, 3, 20]


def test_a_failing_request_does_not_fail_its_batch() -> None:
    rec = Recorder()

    async def main():
        batcher = MicroBatcher(rec, window_s=0.05, max_records=100)
        await batcher.start()
        good = [batcher.submit([1, 2], []) for _ in range(3)]
        bad = batcher.submit([5], ["boom"])
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        await batcher.stop()
        return results

    results = run(main())
    assert results[:3] == [3, 3, 3]
    assert isinstance(results[3], ValueError)


def test_submitting_to_a_stopped_batcher_fails_clearly() -> None:
    async def main():
        batcher = MicroBatcher(Recorder(), window_s=0.0, max_records=10)
        with pytest.raises(BatcherStopped, match="not running"):
            await batcher.submit([1], [])
        await batcher.start()
        assert batcher.running
        await batcher.stop()
        assert not batcher.running

    run(main())


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="window"):
        MicroBatcher(Recorder(), window_s=-1)
    with pytest.raises(ValueError, match="at least one record"):
        MicroBatcher(Recorder(), max_records=0)
