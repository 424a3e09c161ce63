"""Micro-batching: requests that arrive together are answered by one call, off the event loop.

One worker thread takes the oldest waiting image and, without waiting any longer, every image
that queued up behind it (up to ``max_batch``), then calls ``predict_batch`` once. (Since a
prediction reads every digit of its image, each image's candidate digits make one forward pass
of their own: the batch shares the thread hand-off, not the forward pass.) While a batch
runs, new requests queue, so the batch size grows with the load by itself and an idle server
answers a lone request at once (no batching window to wait out).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("mnistkit.serve")

PredictBatch = Callable[[Sequence[Any]], Sequence[Any]]


class BusyError(Exception):
    """The queue is full: the server has more waiting requests than it will hold."""


@dataclass
class _Item:
    image: Any
    future: Future = field(default_factory=Future)


class Batcher:
    """A queue in front of ``predict_batch`` with one worker thread.

    Args:
        predict_batch: list of inputs -> list of results, same order (``Classifier.predict_batch``).
        max_batch: most inputs in one call (64 keeps a CPU batch within a few milliseconds).
        max_queue: most waiting inputs; more are refused with :class:`BusyError` (HTTP 503).
    """

    def __init__(self, predict_batch: PredictBatch, max_batch: int = 64, max_queue: int = 4096):
        self._predict_batch = predict_batch
        self.max_batch = max_batch
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Counters for /api/health and the load test: is batching actually happening?
        self.requests = 0
        self.batches = 0
        self.largest_batch = 0

    def submit(self, image: Any) -> Future:
        """Queue one input; the future gets its result, or the exception predicting it raised."""
        self._ensure_started()
        item = _Item(image)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise BusyError(f"{self._queue.maxsize} requests are already waiting") from None
        return item.future

    async def predict(self, image: Any) -> Any:
        """Await the prediction for one input without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(image))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker after the inputs already queued."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def stats(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "largest_batch": self.largest_batch,
            "max_batch": self.max_batch,
        }

    def _ensure_started(self) -> None:
        # Started on first use rather than at construction, so an app that never serves (or a
        # test client without lifespan events) leaves no idle thread behind.
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="mnistkit-infer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            # Requests that timed out meanwhile were cancelled: skip their work.
            batch = [it for it in batch if it.future.set_running_or_notify_cancel()]
            if batch:
                self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[_Item]) -> None:
        self.requests += len(batch)
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            results = list(self._predict_batch([it.image for it in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"predict_batch gave {len(results)} results for {len(batch)}")
        except Exception as e:
            if len(batch) == 1:
                batch[0].future.set_exception(e)
                return
            # One bad image fails the whole call; redo them one by one so that only the bad
            # one gets the error and the others their answers.
            for it in batch:
                try:
                    it.future.set_result(self._predict_batch([it.image])[0])
                except Exception as e1:
                    it.future.set_exception(e1)
            return
        for it, result in zip(batch, results, strict=True):
            it.future.set_result(result)
