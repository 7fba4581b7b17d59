"""How one stream runs T3 and S3Gen on this process's threads: turns until the first chunk, then T3 ahead.

Until the first chunk is out, T3 and S3Gen take turns, each with every thread: nothing competes with the first
audio. After it, T3 may run ahead in a thread while S3Gen makes audio; on a CPU the two split the threads
(`split_threads`) so they do not oversubscribe the cores. The server does not use this loop: it decodes T3 for
many requests in one batch (inference/server/engine.py) and feeds the same `Utterance`.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch

from .streamers import StreamChunk
from .utterance import PieceInputs, Utterance


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def iterate_ahead(items: Iterable, stop: threading.Event | None = None, threads: int | None = None,
                  finished: threading.Event | None = None) -> Iterator:
    """Iterate `items` in a background thread, so the producer (T3 making tokens) keeps going while the consumer
    (S3Gen making audio) works. `threads`: torch threads of the producer (None: torch's default); `finished` is
    set when the producer has made its last item. Leaving the loop early, or setting `stop`, ends the producer
    after its current item; its exceptions are re-raised here."""
    out: queue.Queue = queue.Queue()
    halt, end = threading.Event(), object()

    def produce() -> None:
        if threads is not None:
            torch.set_num_threads(threads)  # per thread: the consumer keeps its own count
        iterator = iter(items)
        try:
            for item in iterator:
                out.put(item)
                if halt.is_set() or (stop is not None and stop.is_set()):
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            out.put(_Failed(e))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            if finished is not None:
                finished.set()
            out.put(end)

    threading.Thread(target=produce, name="run-ahead", daemon=True).start()
    try:
        while (item := out.get()) is not end:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        halt.set()


def split_threads(device: torch.device) -> tuple[int | None, int | None]:
    """(T3's, S3Gen's) torch threads while T3 runs ahead of S3Gen: on a CPU, a quarter of the threads (at least
    one) decode T3 tokens, which need memory bandwidth more than arithmetic, and S3Gen keeps the rest, so the
    two do not oversubscribe the cores (OpenMP threads spin while they wait). (None, None) on a GPU."""
    if device.type != "cpu":
        return None, None
    total = torch.get_num_threads()
    t3 = max(1, total // 4)
    return t3, max(1, total - t3)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch threads in this thread (None: unchanged)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_stream(utterance: Utterance, decode: Callable[[PieceInputs], Iterable[int]], device: torch.device,
               stop: threading.Event | None = None, run_ahead: bool = True) -> Iterator[StreamChunk]:
    """Chunks of `utterance` as `decode` (T3 for one piece: raw speech tokens) produces its tokens."""

    def all_tokens() -> Iterator[int | None]:
        """Every piece's tokens, None after each: one producer, so T3 can start piece n+1 while S3Gen is still
        turning piece n into audio."""
        for piece in utterance.pieces:
            yield from decode(piece)
            yield None

    tokens = all_tokens()
    for token in tokens:  # turns until the first chunk
        chunk = utterance.feed(token)
        if chunk is not None:
            yield chunk
            utterance.clock.resume()  # the caller's time between chunks is not compute
            break
        if stop is not None and stop.is_set():
            return
    else:
        return  # the utterance ended without any audio
    t3_threads, s3gen_threads = split_threads(device) if run_ahead else (None, None)
    t3_done = threading.Event()  # then S3Gen gets every thread back
    rest = iterate_ahead(tokens, stop, t3_threads, t3_done) if run_ahead else tokens
    every = torch.get_num_threads()
    try:
        # set once per phase, not around every token: each change resizes the thread pool
        if s3gen_threads is not None:
            torch.set_num_threads(s3gen_threads)
        for token in rest:
            if stop is not None and stop.is_set():
                return  # tokens T3 made ahead are dropped unheard
            if t3_done.is_set() and torch.get_num_threads() != every:
                torch.set_num_threads(every)
            chunk = utterance.feed(token)
            if chunk is not None:
                yield chunk
                utterance.clock.resume()
    finally:
        torch.set_num_threads(every)
