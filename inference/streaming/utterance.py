"""One streamed text: its pieces' T3 inputs, and the state that turns their speech tokens into audio chunks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.rates import TOKEN_SAMPLES
from ..models.s3gen.s3gen import RefDict, S3Gen
from ..models.t3 import SamplingConfig, T3Cond
from .streamers import StreamChunk, StreamClock, StreamConfig, make_streamer


@dataclass
class PieceInputs:
    """What T3 decodes for one piece of an utterance."""

    cond: T3Cond
    text_tokens: torch.Tensor  # (1, n) with start/stop
    sampling: SamplingConfig
    seed: int | None


class Utterance:
    """Speech tokens in (None closes a piece), audio chunks out: the S3Gen half of a stream.

    Who decodes the tokens is not its business: `run_stream` decodes them alone, the server in a batch with other
    requests. `stop_token` ends a piece's speech; ids from `first_special` up are not speech and are dropped.
    A piece ends as `generate()` ends it: `tail_tokens` (Turbo's silence) go after its speech, and
    `trim_last_token` (multilingual v3) drops its last token's audio."""

    def __init__(self, s3gen: S3Gen, ref: RefDict, cfg: StreamConfig, pieces: list[PieceInputs],
                 stop_token: int, first_special: int, tail_tokens: tuple[int, ...] = (),
                 trim_last_token: bool = False):
        self.s3gen, self.ref, self.cfg, self.pieces = s3gen, ref, cfg, pieces
        self.stop_token, self.first_special = stop_token, first_special
        self.tail_tokens, self.trim_last_token = list(tail_tokens), trim_last_token
        self.clock = StreamClock()
        self.index, self.pending = 0, []
        self.chunks = 0  # pushed so far, over all pieces: chunk sizes keep growing from one piece to the next
        self.streamer = self._streamer(0)
        self.stopped = False  # the current piece's stop token was seen: what T3 adds after it is not speech
        self.done = False  # every piece ended

    def _streamer(self, index: int):
        seed = self.pieces[index].seed
        return make_streamer(self.s3gen, self.ref, self.cfg,
                             torch.Generator().manual_seed(seed) if seed is not None else None)

    def _last_work(self):
        return self.streamer.work[-1] if self.streamer.work else None

    def feed(self, token: int | None) -> StreamChunk | None:
        """Take T3's next output (a raw token, or None at the end of a piece); a chunk when one is complete."""
        if self.done:
            raise RuntimeError("the utterance has ended")
        if token is None:
            return self._end_piece()
        if token == self.stop_token:
            self.stopped = True
        if self.stopped or token >= self.first_special:
            return None
        self.pending.append(token)
        if len(self.pending) < self.cfg.chunk_tokens(self.chunks):
            return None
        audio, self.pending = self.streamer.push(self.pending), []
        self.chunks += 1
        return self.clock.chunk(audio, self._last_work()) if len(audio) else None

    def _end_piece(self) -> StreamChunk | None:
        spoken = len(self.streamer.tokens) + len(self.pending)
        ending = self.pending + (self.tail_tokens if spoken else [])
        audio, self.pending = np.concatenate([self.streamer.push(ending), self.streamer.finish()]), []
        if self.trim_last_token and spoken > 1:
            audio = audio[:max(0, len(audio) - TOKEN_SAMPLES)]
        work = self._last_work()
        capped = not self.stopped  # T3 ran out of max_new_tokens: the piece may be cut short
        self.index += 1
        self.stopped = False
        if self.index < len(self.pieces):
            self.streamer = self._streamer(self.index)
        else:
            self.done = True
        return self.clock.chunk(audio, work, capped) if len(audio) else None

    def tokens_to_next_chunk(self) -> int:
        return self.cfg.chunk_tokens(self.chunks) - len(self.pending)
