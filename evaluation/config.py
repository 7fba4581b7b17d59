"""`[evaluation]` of config.toml: what to compare, on which sentences, how to stream and how to score."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from inference.asr import BUNDLED_BASE, TranscribeConfig
from inference.models.limits import check_limits, prompt_tokens_setting

from .similarity import SimilarityConfig


@dataclass
class StreamSettings:
    """Passed to `generate_stream` for every sample of both models (see inference/streaming.py); allowed values:
    inference/models/limits.py."""

    chunk_size: int = 25  # speech tokens per chunk (25 = 1 s of audio)
    strategy: str = "incremental"  # incremental | window
    context_window: int = 50  # window strategy only
    prompt_tokens: int = 0  # voice-prompt tokens decoded with each chunk; 0: all
    cfg_weight: float = 0.5
    temperature: float = 0.8
    exaggeration: float = 0.5
    max_new_tokens: int = 400  # per sentence (16 s); the tiny preset, which never stops, gets 50

    def __post_init__(self) -> None:
        check_limits(self.generate_kwargs(), "stream.")

    def generate_kwargs(self) -> dict:
        """These settings as `generate_stream` takes them."""
        return {**asdict(self), "prompt_tokens": prompt_tokens_setting(self.prompt_tokens)}


@dataclass
class EvalConfig:
    base_model_path: str = "tiny"  # 'tiny' (synthetic weights) | official folder | repo id
    tuned_model_path: str = ""  # training output (<run>/adapter, <run>/merged, <run>/step-N) | 'latest' | '': base only
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
    asr: TranscribeConfig = field(default_factory=lambda: TranscribeConfig(model=BUNDLED_BASE))
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)

    def __post_init__(self) -> None:
        if not self.base_model_path:
            raise ValueError("base_model_path is empty: give 'tiny', an official model folder or a repo id")
        if self.samples_per_sentence < 1 or self.max_sentences < 0:
            raise ValueError("samples_per_sentence must be >= 1 and max_sentences >= 0")

