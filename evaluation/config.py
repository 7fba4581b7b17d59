"""`[evaluation]` of config.toml: what to compare, on which sentences, how to stream and how to score."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from inference.asr import BUNDLED_BASE, TranscribeConfig
from inference.models.limits import check_limits, prompt_tokens_setting
from inference.precision import check_dtypes

from .similarity import SimilarityConfig


@dataclass
class Decoding:
    """The settings each model family defaults differently; None (\"\" in config.toml) takes the family's, so one
    table serves an English and a Turbo setup alike (Turbo refuses cfg_weight, min_p and exaggeration; the others
    top_k). Allowed values: inference/models/limits.py."""

    prompt_tokens: int | None = None  # voice-prompt tokens decoded with each chunk; 0: all
    cfg_weight: float | None = None
    temperature: float | None = None
    exaggeration: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    def given(self, *leave_out: str) -> dict:
        """The settings set (not None), as `generate_stream` takes them (prompt_tokens 0: the whole prompt)."""
        return {k: v for k, v in asdict(self).items() if v is not None and k not in leave_out}

    def check(self, where: str) -> None:
        check_limits({**self.given(), "prompt_tokens": prompt_tokens_setting(self.prompt_tokens)}, where)


@dataclass
class StreamSettings(Decoding):
    """Passed to `generate_stream` for every sample of both setups (see inference/streaming.py)."""

    chunk_size: int = 25  # speech tokens per chunk (25 = 1 s of audio)
    strategy: str = "incremental"  # incremental | window
    context_window: int = 50  # window strategy only
    max_new_tokens: int = 400  # per sentence (16 s); the presets, which never stop, get 50

    def __post_init__(self) -> None:
        self.check("stream.")

    def generate_kwargs(self) -> dict:
        return self.given()


@dataclass
class Setup(Decoding):
    """One side of the comparison beside its model (side A: base_model_path, side B: tuned_model_path): what the
    report calls it, how the model runs, and the stream settings where they differ from [evaluation.stream]
    (None: [evaluation.stream]'s)."""

    label: str = ""  # the side's name in the report; "": from what differs (see evaluate.side_labels)
    t3_dtype: str = "float32"  # float32 | bfloat16 | float16 | int8 (CPU)
    s3gen_dtype: str = "float32"  # float32 | bfloat16
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        self.check("")
        check_dtypes(self.t3_dtype, self.s3gen_dtype)
        if any(c in self.label for c in "/\\") or self.label.startswith("."):
            raise ValueError(f"label {self.label!r}: a name without slashes (it names the samples' folder)")

    def stream(self, shared: StreamSettings) -> StreamSettings:
        return replace(shared, **self.given("label", "t3_dtype", "s3gen_dtype"))


@dataclass
class EvalConfig:
    base_model_path: str = ""  # side A: a preset | official folder | repo id; '': B's base if B is a fine-tune, else tiny
    tuned_model_path: str = ""  # side B: any model, or a training output (<run>/adapter, ...) | 'latest' | '': A only
    multilingual: bool = False  # the base is the multilingual model
    language: str = "en"
    reference_audio: tuple[str, ...] = ()  # the speaker's clip(s); empty: a held-out clip (see resolve_reference)
    audio_dir: str = "audio_data"  # the training speaker's recordings, for the default reference
    checkpoints_dir: str = "checkpoints_dir"  # where 'latest' looks
    sentences: str = "default"  # 'default' (Harvard for English, the language's set otherwise) | set name | file
    max_sentences: int = 30  # first N sentences; 0: all (see config.toml for why 30)
    samples_per_sentence: int = 1
    seed: int = 0  # sample k of sentence i uses seed + 1000 * i + k, the same for both models
    device: str = "cpu"  # cpu | cuda
    output_dir: str = ""  # the run folder (report.md lands here); empty: evaluation_runs/eval-<date>-<time>
    runs_dir: str = "evaluation_runs"  # where runs without an output_dir go (relative: to the working folder)
    stream: StreamSettings = field(default_factory=StreamSettings)
    a: Setup = field(default_factory=Setup)  # side A, the model of base_model_path
    b: Setup = field(default_factory=Setup)  # side B, the model of tuned_model_path
    asr: TranscribeConfig = field(default_factory=lambda: TranscribeConfig(model=BUNDLED_BASE))
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)

    def __post_init__(self) -> None:
        if self.samples_per_sentence < 1 or self.max_sentences < 0:
            raise ValueError("samples_per_sentence must be >= 1 and max_sentences >= 0")

