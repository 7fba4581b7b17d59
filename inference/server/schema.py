"""What a request may ask for: the HTTP speech endpoint and the WebSocket's `start` message are both checked
against `SynthesisOptions`, before any audio is sent, so a bad value is a 4xx with the field named instead of a cut
stream. The bounds of the sampling and streaming options are the request rows of `inference/models/limits.py`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models.limits import LIMITS
from .audio_formats import FORMATS

VOICE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # no dots or slashes: a voice name is also a file name
MAX_SEED = 2**63 - 1 - 10_000  # pieces of a long text take seed, seed + 1, ...: keep them in torch's range

ResponseFormat = Literal[FORMATS]


def _limited(name: str):
    """An optional request field with the bounds LIMITS gives requests; None: the server's default."""
    return Field(default=None, **LIMITS[name].pydantic())


class SynthesisOptions(BaseModel):
    """Sampling and streaming settings a client may set; absent ones take the model's defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)  # strict: `"seed": true` is no 1

    voice: str = Field(default="default", pattern=VOICE_NAME)
    language_id: str | None = Field(default=None, min_length=2, max_length=8)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    temperature: float | None = _limited("temperature")
    cfg_weight: float | None = _limited("cfg_weight")
    exaggeration: float | None = _limited("exaggeration")
    min_p: float | None = _limited("min_p")
    top_p: float | None = _limited("top_p")
    top_k: int | None = _limited("top_k")
    repetition_penalty: float | None = _limited("repetition_penalty")
    chunk_size: int | None = _limited("chunk_size")
    speed: float = Field(default=1.0, ge=0.25, le=4.0)  # time-stretched, pitch kept

    def synthesis_kwargs(self) -> dict:
        """The fields that go to `model.utterance` (None: the model's default)."""
        fields = set(SynthesisOptions.model_fields) - {"voice", "speed"}
        return {k: v for k, v in self.model_dump(include=fields).items() if v is not None}


class SpeechRequest(SynthesisOptions):
    """OpenAI's `POST /v1/audio/speech` body plus our options. `model` is accepted and ignored (one model per
    server); `instructions` is accepted and ignored (Chatterbox takes no style prompt; English and multilingual
    take `exaggeration`)."""

    model: str | None = Field(default=None, max_length=200)
    input: str
    instructions: str | None = Field(default=None, max_length=4096)
    response_format: ResponseFormat = "mp3"  # OpenAI's default
    stream_format: Literal["audio", "sse"] = "audio"
    stream: bool = True  # False: the whole file, sent once complete (a WAV then carries its true sizes)


class StreamStart(SynthesisOptions):
    """The WebSocket's first message: `{"type": "start", ...options}`; audio comes back as 16-bit PCM frames."""

    type: Literal["start"]
