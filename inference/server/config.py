"""Server settings: `[server]` in config.toml, every key also a flag (--max-batch 4, --openai-voices.nova anna)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..models.limits import check_limits, prompt_tokens_setting
from ..models.rates import S3GEN_SR as SAMPLE_RATE  # the rate every response carries


@dataclass
class OpenAIVoices:
    """OpenAI's voice names, each played by one of this server's voices (so SDK examples work unchanged)."""

    alloy: str = "default"
    ash: str = "default"
    ballad: str = "default"
    coral: str = "default"
    echo: str = "default"
    fable: str = "default"
    onyx: str = "default"
    nova: str = "default"
    sage: str = "default"
    shimmer: str = "default"
    verse: str = "default"
    marin: str = "default"
    cedar: str = "default"


@dataclass
class ServerConfig:
    model: str = "tiny"  # any family: a preset (tiny-turbo, synthetic-nano), a folder, a repo id, an adapter folder
    adapter: str = ""  # LoRA adapter folder from training to put on `model` ("" : none)
    family: str = ""  # english | multilingual | turbo | nano; "": recognised from the model's files or repo id
    multilingual: bool = False
    t3_model: str = ""  # multilingual only: v2 | v3 | <file>.safetensors; "": v2
    device: str = "cpu"
    t3_dtype: str = "float32"  # float32 | bfloat16 | float16 | int8 (CPU): T3's weights (README, "Speed")
    s3gen_dtype: str = "float32"  # float32 | bfloat16: S3Gen's flow (README, "Speed")
    host: str = "127.0.0.1"
    port: int = 8000
    voices: str = "voices"  # folder of reference clips (one voice per file, named after it); uploads are saved here
    allow_voice_overwrite: bool = False  # whether an upload may replace a voice of the same name
    max_upload_mb: float = 20.0  # voice uploads larger than this: 413
    max_voice_seconds: float = 60.0  # longer voice uploads: 400
    api_key: str = ""  # required as `Authorization: Bearer KEY` on every endpoint; "" : none (env CHATTERBOX_API_KEY)
    cors_origins: tuple[str, ...] = ()  # web origins allowed to call (browsers); () : none
    # host names requests may be sent to besides IP addresses and localhost (a defence against DNS rebinding):
    # the names of a public server or of its proxy, e.g. ("tts.example.com",); ".example.com": it and subdomains;
    # "*": any
    allowed_hosts: tuple[str, ...] = ()
    shutdown_grace_seconds: float = 10.0  # on SIGTERM, streams still running after this are cancelled
    max_chars: int = 5000  # longer input gets 413
    max_batch: int = 8  # requests decoded together by T3 (1: one after another)
    max_queue: int = 16  # requests waiting for a batch slot beyond this get 503 (0: no waiting line)
    # how every request streams, unless it asks otherwise (allowed values: inference/models/limits.py)
    max_new_tokens: int = 1000  # per sentence
    chunk_size: int = 25
    strategy: str = "incremental"
    # voice-prompt tokens decoded with every chunk (0: all); fewer is faster per chunk. None ("" in config.toml):
    # the model family's (Turbo and Nano: 50; English and multilingual: all)
    prompt_tokens: int | None = None
    openai_voices: OpenAIVoices = field(default_factory=OpenAIVoices)

    def __post_init__(self) -> None:
        from ..precision import check_dtypes

        check_dtypes(self.t3_dtype, self.s3gen_dtype)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {self.max_queue}")
        if self.shutdown_grace_seconds < 0:
            raise ValueError(f"shutdown_grace_seconds must be 0 or more, got {self.shutdown_grace_seconds}")
        check_limits({**self.stream_settings(), "prompt_tokens": prompt_tokens_setting(self.prompt_tokens)})

    def stream_settings(self) -> dict:
        """The streaming settings every request starts from, as `utterance` takes them."""
        settings = {"chunk_size": self.chunk_size, "strategy": self.strategy, "max_new_tokens": self.max_new_tokens}
        if self.prompt_tokens is not None:  # WHOLE_PROMPT (0) included: all of it, whatever the family's default
            settings["prompt_tokens"] = self.prompt_tokens
        return settings
