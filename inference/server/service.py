"""What every endpoint does with a request, apart from HTTP: find the voice, check the text and settings, queue the
request on the engine and hand its audio chunks to the web side.

Everything that can be refused is refused in `start`, before a response begins, as an `ApiError` (a 4xx naming
the field, or 503 with Retry-After when the engine is full); after that, a failure can only cut the stream.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from ..audio import AudioError
from ..conditionals import Conditionals
from ..streaming import StreamChunk
from .config import ServerConfig
from .engine import Busy, Engine, Job
from .errors import ApiError
from .schema import SynthesisOptions
from .voices import VoiceError, VoiceStore


@dataclass(eq=False)
class Synthesis:
    """One accepted request: its job in the engine and the queue its chunks arrive on (the engine's threads put
    them there through the event loop)."""

    job: Job
    queue: asyncio.Queue

    async def chunks(self) -> AsyncIterator[StreamChunk]:
        """The job's StreamChunks as they come; the job is cancelled however this generator ends (a client that
        leaves stops its decoding)."""
        try:
            while (item := await self.queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.job.cancel()

    def text_tokens(self) -> int:
        """Text tokens of the whole input, start/stop tokens of every piece included (OpenAI's input usage)."""
        return sum(piece.text_tokens.shape[1] for piece in self.job.utterance.pieces)


class SpeechService:
    """The server's state (engine, voices, settings) and the request logic the endpoints share."""

    def __init__(self, engine: Engine, voices: VoiceStore, cfg: ServerConfig):
        self.engine, self.voices, self.cfg = engine, voices, cfg
        self.model = engine.model

    def voice_name(self, name: str) -> str:
        """OpenAI's voice names play the voice configured for them, unless a voice of that very name exists."""
        if name in self.voices.voices:
            return name
        return getattr(self.cfg.openai_voices, name, name)

    async def voice(self, name: str) -> Conditionals:
        """A loaded voice at once; one only on disk (saved by another replica) is prepared in a worker thread."""
        name = self.voice_name(name)
        if name in self.voices.voices:
            return self.voices.voices[name]
        return await asyncio.to_thread(self.voices.get, name)

    async def add_voice(self, name: str, clip: bytes) -> None:
        """Make and save a voice from an uploaded clip (in a worker thread: the encoders take a while)."""
        try:
            await asyncio.to_thread(self.voices.add, name, clip, self.cfg.max_voice_seconds)
        except VoiceError as e:
            raise ApiError(e.status, str(e), e.param) from None
        except AudioError as e:
            raise ApiError(400, str(e), "file") from None

    def check_text(self, text: str) -> None:
        if not text.strip():
            raise ApiError(400, "input is empty", "input")
        if len(text) > self.cfg.max_chars:
            raise ApiError(413, f"input is {len(text)} characters; this server takes at most {self.cfg.max_chars}",
                           "input", "input_too_long")

    def check_options(self, options: SynthesisOptions) -> None:
        """Refuse a field the model's family does not use (Turbo: cfg_weight, exaggeration, min_p), naming it, with
        the family's reason; a field left unset (or 0) is not refused."""
        for name, value in options.synthesis_kwargs().items():
            try:
                self.model.FAMILY.check_settings(**{name: value})
            except ValueError as e:
                raise ApiError(400, str(e), name, "unsupported_parameter") from None

    def utterance(self, options: SynthesisOptions, text: str, conds: Conditionals):
        """The request's utterance with the server's streaming settings; bad text, language or settings: 400."""
        settings = {**self.cfg.stream_settings(), **options.synthesis_kwargs()}
        try:
            return self.model.utterance(text, conds=conds, **settings)
        except ValueError as e:  # TextError included
            raise ApiError(400, str(e), "language_id" if "language" in str(e) else "input") from None

    async def start(self, options: SynthesisOptions, text: str) -> Synthesis:
        """Check everything about the request, then queue it on the engine."""
        self.check_options(options)
        self.check_text(text)
        try:
            conds = await self.voice(options.voice)
        except VoiceError as e:
            raise ApiError(e.status, str(e), "voice") from None
        utterance = self.utterance(options, text, conds)
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        job = Job(utterance, lambda item: loop.call_soon_threadsafe(queue.put_nowait, item))
        try:
            self.engine.submit(job)
        except Busy as e:
            raise ApiError(503, str(e), code="server_busy", headers={"Retry-After": str(e.retry_after)}) from None
        return Synthesis(job, queue)


async def get_service(connection: HTTPConnection) -> SpeechService:
    """The app's service, for endpoints to take as a FastAPI dependency (HTTP and WebSocket alike). Async on
    purpose: FastAPI runs a plain function in a worker thread, a thread per request in flight."""
    return connection.app.state.service
