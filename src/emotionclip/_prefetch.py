"""One background prefetcher for every stage: decode the next items while the model runs.

``prefetch(items)`` iterates ``items`` (a generator doing the decoding, say) in a background thread;
``prefetch(items, fn, workers=k)`` also maps ``fn`` over them in ``k`` threads. Results come back in
input order, at most ``depth`` ahead of the consumer, so memory stays bounded. An exception raised by
the iteration or by ``fn`` is re-raised in the consumer; stopping early (``break``, an error in the
consumer) stops the threads. Threads, not processes: PyAV, PIL and numpy release the GIL while they
decode and resize, and nothing has to be pickled.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_DONE = object()


def prefetch(
    items: Iterable,
    fn: Callable[[Any], Any] | None = None,
    *,
    workers: int = 1,
    depth: int = 2,
) -> Iterator:
    """Yield ``fn(item)`` (or the item itself when ``fn`` is None) for each item, in order.

    ``workers=0`` runs everything in the calling thread (no threads at all: for debugging and for
    callers that must stay single-threaded).
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    if workers <= 0:
        yield from (item if fn is None else fn(item) for item in items)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="emotionclip-prefetch") if fn else None
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(pool.submit(fn, item) if pool else item):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(_Failure(e))

    thread = threading.Thread(target=produce, daemon=True, name="emotionclip-prefetch-feed")
    thread.start()
    try:
        while True:
            entry = q.get()
            if entry is _DONE:
                return
            if isinstance(entry, _Failure):
                raise entry.error
            yield entry.result() if isinstance(entry, Future) else entry
    finally:
        stop.set()
        thread.join()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error
