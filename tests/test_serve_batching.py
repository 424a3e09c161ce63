"""Micro-batching in the service: requests that arrive together share one forward pass."""

from __future__ import annotations

import threading

import pytest

from mnistkit.serve.batching import Batcher


def test_requests_arriving_together_share_one_batch():
    """While one batch runs, the next requests queue and go through as one call."""
    calls: list[list[int]] = []
    release = threading.Event()

    def predict_batch(xs):
        calls.append(list(xs))
        release.wait(10)
        if any(x < 0 for x in xs):
            raise ValueError("negative")
        return [x * 10 for x in xs]

    batcher = Batcher(predict_batch, max_batch=4)
    first = batcher.submit(0)
    while not calls:  # the worker holds the first item
        threading.Event().wait(0.01)
    xs = (1, 2, -3, 4, 5)
    rest = [batcher.submit(x) for x in xs]
    release.set()
    assert first.result(10) == 0
    for future, x in zip(rest, xs, strict=True):
        if x < 0:
            with pytest.raises(ValueError):
                future.result(10)
        else:
            assert future.result(10) == 10 * x
    batcher.close()
    # [0], then [1,2,-3,4] fails as a whole and is redone one by one, then [5].
    assert calls[0] == [0] and calls[1] == [1, 2, -3, 4]
    assert [1] in calls and [-3] in calls and calls[-1] == [5]
    assert batcher.stats()["largest_batch"] == 4


def test_queue_limit_refuses_with_busy_error():
    from mnistkit.serve.batching import BusyError

    release = threading.Event()
    batcher = Batcher(lambda xs: (release.wait(10), list(xs))[1], max_batch=1, max_queue=2)
    futures = [batcher.submit(0)]
    while batcher.stats()["batches"] == 0:  # the worker holds item 0; the queue is empty
        threading.Event().wait(0.01)
    futures += [batcher.submit(1), batcher.submit(2)]
    with pytest.raises(BusyError):
        batcher.submit(3)
    release.set()
    assert [f.result(10) for f in futures] == [0, 1, 2]
    batcher.close()
