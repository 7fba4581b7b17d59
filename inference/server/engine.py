"""The server's two compute loops: T3 decodes every request in flight as one batch, S3Gen serves the stream most
behind its playback first.

T3 thread: requests join the batch at step boundaries (up to `max_batch`), one backbone call per step for all of
them (`T3Batcher`); each request's tokens go to its own queue.
S3Gen thread: of the requests with a chunk's worth of tokens, a request that has had no audio yet goes first, then
the one whose audio runs out soonest (earliest deadline: arrival + audio sent). So a new request's first chunk
comes right after the chunk in progress, and no stream starves while others play.
Audio reaches the web side through a callback the caller gives (the app wraps an asyncio queue): no thread waits
on a request's behalf.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..models.rates import S3GEN_SR
from ..streaming import Utterance
from .batching import Decoding, T3Batcher

log = logging.getLogger("inference.server")


class Busy(Exception):
    """Every batch slot is taken and the waiting line is full."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy; retry in about {retry_after} s")
        self.retry_after = retry_after


@dataclass(eq=False)
class Job:
    """One request: its utterance in, StreamChunks out through `deliver` (an Exception on failure, None at the end;
    `deliver` is called from the engine's threads and must not block)."""

    utterance: Utterance
    deliver: Callable[[object], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: collections.deque = field(default_factory=collections.deque)  # T3 -> S3Gen: ids, None ends a piece
    decoded_pieces: int = 0
    arrived: float = field(default_factory=time.perf_counter)
    finished: bool = False

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def deadline(self) -> float:
        """When the client's audio runs out if nothing more comes."""
        return self.arrived + self.utterance.clock.audio

    def ready(self) -> bool:
        """Whether the S3Gen loop has something to do for this job."""
        if self.cancelled.is_set():
            return True
        return None in self.tokens or len(self.tokens) >= self.utterance.tokens_to_next_chunk()


class Engine:
    def __init__(self, model, max_batch: int = 8, max_queue: int = 16):
        self.model = model
        self.max_batch, self.max_queue = max_batch, max_queue
        self.batcher = T3Batcher(model.t3)
        self.waiting: collections.deque[tuple[Job, Decoding]] = collections.deque()  # pieces not yet in the batch
        self.jobs: list[Job] = []  # accepted and not finished
        self.lock = threading.Condition()
        self.completed = self.cancelled = self.failed = 0
        self.tokens_decoded = 0
        self.audio_samples = 0  # sent to clients: shows how much work a cancelled request still cost
        self.durations: collections.deque[float] = collections.deque(maxlen=50)
        self.threads = [threading.Thread(target=self._t3_loop, name="t3-batch", daemon=True),
                        threading.Thread(target=self._s3gen_loop, name="s3gen", daemon=True)]
        for t in self.threads:
            t.start()

    # ------------------------------------------------------------------ requests
    def submit(self, job: Job) -> Job:
        """Queue `job`'s first piece for the batch; Busy when `max_batch` requests stream and `max_queue` wait."""
        with self.lock:
            if len(self.jobs) >= self.max_batch + self.max_queue:
                raise Busy(self.retry_after())
            self.jobs.append(job)
            self._queue_piece(job, front=False)
            self.lock.notify_all()
        return job

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the recent mean request time, shared among the batch slots."""
        mean = sum(self.durations) / len(self.durations) if self.durations else 5.0
        return max(1, min(120, round(mean * (1 + len(self.waiting)) / self.max_batch)))

    def stats(self) -> dict:
        with self.lock:
            return {"in_batch": len(self.batcher.active), "queued": len(self.waiting), "streams": len(self.jobs),
                    "completed": self.completed, "cancelled": self.cancelled, "failed": self.failed,
                    "batch_steps": self.batcher.steps, "tokens_decoded": self.tokens_decoded,
                    "audio_seconds": round(self.audio_samples / S3GEN_SR, 3)}

    def _queue_piece(self, job: Job, front: bool) -> None:
        """Called with the lock held: the job's next piece waits for the batch (a continuing job goes first)."""
        piece = job.utterance.pieces[job.decoded_pieces]
        generator = torch.Generator(device=self.model.device)
        if piece.seed is None:
            generator.seed()  # a fresh random seed: requests without one must not all sound alike
        else:
            generator.manual_seed(piece.seed)
        decoding = Decoding(piece.cond, piece.text_tokens, piece.sampling, lambda token: self._on_token(job, token),
                            generator, job.cancelled)
        (self.waiting.appendleft if front else self.waiting.append)((job, decoding))

    # ------------------------------------------------------------------ T3
    def _on_token(self, job: Job, token: int | None) -> None:
        """From the T3 thread: hand the token to S3Gen; at a piece's end, line up the next piece."""
        with self.lock:
            job.tokens.append(token)
            if token is None:
                job.decoded_pieces += 1
                if job.decoded_pieces < len(job.utterance.pieces) and not job.cancelled.is_set():
                    self._queue_piece(job, front=True)
            else:
                self.tokens_decoded += 1
            self.lock.notify_all()

    def _t3_loop(self) -> None:
        while True:
            with self.lock:
                while not self.waiting and not self.batcher.active:
                    self.lock.wait()
                joining = []
                while self.waiting and len(self.batcher.active) + len(joining) < self.max_batch:
                    joining.append(self.waiting.popleft())
            for job, decoding in joining:
                if job.cancelled.is_set():
                    self._on_token(job, None)
                    continue
                try:
                    self.batcher.add(decoding)
                except Exception as e:  # noqa: BLE001 - this request fails, the others go on
                    log.exception("T3 could not start a request")
                    self._fail(job, e)
            try:
                self.batcher.step()
            except Exception as e:  # noqa: BLE001 - a failed step fails every request in it
                log.exception("T3 batch step failed")
                failed = self.batcher.reset()
                with self.lock:
                    victims = [job for job in self.jobs if any(d.stop is job.cancelled for d in failed)]
                for job in victims:
                    self._fail(job, e)

    def _fail(self, job: Job, error: Exception) -> None:
        job.cancel()
        with self.lock:
            if job in self.jobs:
                self.jobs.remove(job)
                self.failed += 1
            self.lock.notify_all()
        job.deliver(error)
        job.deliver(None)

    # ------------------------------------------------------------------ S3Gen
    def _s3gen_loop(self) -> None:
        while True:
            with self.lock:
                while not (ready := [j for j in self.jobs if j.ready()]):
                    self.lock.wait()
                job = min(ready, key=lambda j: (j.utterance.clock.first is not None, j.deadline))
                if job.cancelled.is_set():
                    self.jobs.remove(job)
                    self.cancelled += 1
                    log.info("client gone: its request was cancelled")
                    continue
                tokens = []
                while job.tokens and (not tokens or tokens[-1] is not None) \
                        and len([t for t in tokens if t is not None]) < job.utterance.tokens_to_next_chunk():
                    tokens.append(job.tokens.popleft())
            try:
                for token in tokens:
                    chunk = job.utterance.feed(token)
                    if chunk is not None:
                        self.audio_samples += len(chunk.audio)
                        job.deliver(chunk)
            except Exception as e:  # noqa: BLE001 - this request fails, the others go on
                log.exception("S3Gen failed on a request")
                self._fail(job, e)
                continue
            if job.utterance.done:
                with self.lock:
                    if job not in self.jobs:  # failed meanwhile (its next piece could not start): already ended
                        continue
                    self.jobs.remove(job)
                    self.completed += 1
                    self.durations.append(time.perf_counter() - job.arrived)
                job.deliver(None)
