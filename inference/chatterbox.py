"""User-facing text-to-speech classes: they own the models, the device and the current voice.

S3Gen (speech tokens -> waveform) arrives with the next milestone; until then synthesis stops at
speech tokens (`generate_speech_tokens`).
"""
from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import presets
from .checkpoints import (ENGLISH_FILES, MULTILINGUAL_FILES, REPO_ID, CheckpointError, ModelFiles, download_model,
                          load_module, save_module)
from .conditionals import Conditionals
from .models.t3 import T3, SamplingConfig, T3Config
from .models.tokenizers import EnTokenizer, MTLTokenizer, TextError, normalize_text
from .models.tokenizers.languages import check_language
from .models.voice_encoder import VoiceEncoder

log = logging.getLogger(__name__)

# Written beside the weights only when T3 is not of an official size (the tiny preset, experiments).
T3_CONFIG_FILE = "t3_config.json"


class _Chatterbox(ABC):
    FILES: ModelFiles
    BASE_CONFIG: T3Config
    DEFAULT_REPETITION_PENALTY: float
    PRESET_NAMES: tuple[str, ...]

    def __init__(self, t3: T3, ve: VoiceEncoder, tokenizer, device: str | torch.device = "cpu",
                 conds: Conditionals | None = None, is_preset: bool = False):
        self.device = torch.device(device)
        self.t3 = t3.to(self.device).eval()
        self.ve = ve.to(self.device).eval()
        self.tokenizer = tokenizer
        self.conds = conds.to(self.device) if conds is not None else None
        self.is_preset = is_preset
        if is_preset:
            log.warning(presets.WARNING)

    # ------------------------------------------------------------------ loading
    @classmethod
    def _read_t3_config(cls, folder: Path) -> T3Config:
        sidecar = folder / T3_CONFIG_FILE
        if not sidecar.is_file():
            return cls.BASE_CONFIG
        try:
            fields = json.loads(sidecar.read_text())
            fields["alignment_heads"] = tuple(tuple(h) for h in fields.get("alignment_heads", ()))
            return T3Config(**fields)
        except (json.JSONDecodeError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{sidecar} is not a valid T3 config: {e}") from e

    @classmethod
    @abstractmethod
    def _load_tokenizer(cls, path: Path):
        """Each model family has its own tokenizer class and file."""

    @classmethod
    def from_local(cls, folder: str | Path, device: str | torch.device = "cpu"):
        """Load a folder in the official layout (also what our training writes)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        missing = [f for f in (cls.FILES.t3, cls.FILES.ve, cls.FILES.tokenizer) if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {', '.join(missing)} (expected the official layout: "
                                    f"{', '.join(cls.FILES.all())})")
        t3 = load_module(T3(cls._read_t3_config(folder), init_weights=False), folder / cls.FILES.t3)
        ve = load_module(VoiceEncoder(), folder / cls.FILES.ve)
        tokenizer = cls._load_tokenizer(folder / cls.FILES.tokenizer)
        if tokenizer.vocab_size > t3.cfg.text_vocab_size:
            raise CheckpointError(f"{cls.FILES.tokenizer} has {tokenizer.vocab_size} tokens but T3 only "
                                  f"{t3.cfg.text_vocab_size} text embeddings")
        conds = Conditionals.load(folder / cls.FILES.conds) if (folder / cls.FILES.conds).is_file() else None
        return cls(t3, ve, tokenizer, device, conds)

    @classmethod
    def from_pretrained(cls, device: str | torch.device = "cpu", repo_id: str = REPO_ID, revision: str = "main"):
        return cls.from_local(download_model(cls.FILES, repo_id, revision), device)

    @classmethod
    def from_preset(cls, name: str = "tiny", device: str | torch.device = "cpu"):
        if name not in cls.PRESET_NAMES:
            raise ValueError(f"{cls.__name__} has the presets {cls.PRESET_NAMES}, not {name!r}")
        multilingual = cls.BASE_CONFIG.is_multilingual
        t3 = presets.tiny_t3(multilingual)
        return cls(t3, presets.tiny_voice_encoder(), presets.tiny_tokenizer(multilingual), device,
                   presets.tiny_conditionals(t3.cfg), is_preset=True)

    @classmethod
    def load(cls, model: str | Path, device: str | torch.device = "cpu"):
        """`model` is 'tiny' (the preset), a local folder, or a Hugging Face repo id."""
        if str(model) in presets.PRESETS:
            return cls.from_preset(str(model), device)
        if Path(model).exists():
            return cls.from_local(model, device)
        if "/" in str(model) and not str(model).startswith((".", "/")):
            return cls.from_pretrained(device, repo_id=str(model))
        raise FileNotFoundError(f"--model {model!r} is neither a preset ({', '.join(presets.PRESETS)}), "
                                "an existing folder, nor a Hugging Face repo id (owner/name)")

    def save_local(self, folder: str | Path) -> Path:
        """Write the official layout (plus t3_config.json when T3 is not of an official size)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_module(self.t3, folder / self.FILES.t3)
        save_module(self.ve, folder / self.FILES.ve)
        self.tokenizer.save(folder / self.FILES.tokenizer)
        if self.conds is not None:
            self.conds.save(folder / self.FILES.conds)
        if self.t3.cfg != self.BASE_CONFIG:
            (folder / T3_CONFIG_FILE).write_text(json.dumps(asdict(self.t3.cfg), indent=1))
        else:
            (folder / T3_CONFIG_FILE).unlink(missing_ok=True)
        return folder

    # ------------------------------------------------------------------ synthesis
    @abstractmethod
    def _encode(self, text: str, language_id: str | None) -> list[int]:
        """Normalised text -> token ids, without start/stop."""

    def text_tokens(self, text: str, language_id: str | None = None) -> torch.Tensor:
        """Normalised, tokenized text with start/stop tokens: (1, n) on the model's device."""
        ids = self._encode(normalize_text(text), language_id)
        cfg = self.t3.cfg
        if len(ids) > cfg.max_text_tokens:
            raise TextError(f"text is {len(ids)} tokens long; the model takes at most {cfg.max_text_tokens} "
                            "per call. Split it into sentences.")
        tokens = torch.tensor([ids], dtype=torch.long, device=self.device)
        tokens = F.pad(tokens, (1, 0), value=cfg.start_text_token)
        return F.pad(tokens, (0, 1), value=cfg.stop_text_token)

    def sampling_config(self, **overrides) -> SamplingConfig:
        base = SamplingConfig(repetition_penalty=self.DEFAULT_REPETITION_PENALTY)
        return SamplingConfig(**{**asdict(base), **{k: v for k, v in overrides.items() if v is not None}})

    def iter_speech_tokens(self, text: str, language_id: str | None = None, exaggeration: float = 0.5,
                           seed: int | None = None, **sampling) -> Iterator[int]:
        """Raw decoder output token by token (stop token included when reached).

        `sampling` takes SamplingConfig fields (cfg_weight, temperature, repetition_penalty, min_p,
        top_p, max_new_tokens); None means the model family's default.
        """
        if self.conds is None:
            raise RuntimeError("no voice loaded: the model folder has no conds.pt; prepare conditionals first")
        tokens = self.text_tokens(text, language_id)
        cond = self.conds.t3.with_exaggeration(exaggeration)
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        yield from self.t3.generate_tokens(cond, tokens, self.sampling_config(**sampling), generator=generator)

    def generate_speech_tokens(self, text: str, language_id: str | None = None, exaggeration: float = 0.5,
                               seed: int | None = None, progress: bool = False, **sampling) -> torch.Tensor:
        """Text -> 1-D tensor of speech tokens for S3Gen: cut at the stop token, specials removed."""
        ids = []
        with tqdm(total=sampling.get("max_new_tokens") or SamplingConfig.max_new_tokens, disable=not progress,
                  desc="speech tokens", unit="tok") as bar:
            for token in self.iter_speech_tokens(text, language_id, exaggeration, seed, **sampling):
                if token == self.t3.cfg.stop_speech_token:
                    break
                ids.append(token)
                bar.update(1)
        ids = torch.tensor(ids, dtype=torch.long)
        return ids[ids < self.t3.cfg.start_speech_token]


class ChatterboxTTS(_Chatterbox):
    """English Chatterbox."""

    FILES = ENGLISH_FILES
    BASE_CONFIG = T3Config.english()
    DEFAULT_REPETITION_PENALTY = 1.2
    PRESET_NAMES = ("tiny",)

    @classmethod
    def _load_tokenizer(cls, path: Path):
        return EnTokenizer.from_file(path)

    def _encode(self, text: str, language_id: str | None) -> list[int]:
        if language_id not in (None, "en"):
            raise TextError(f"the English model cannot speak language {language_id!r}; "
                            "use ChatterboxMultilingualTTS (--model with the multilingual checkpoint)")
        return self.tokenizer.encode(text)


class ChatterboxMultilingualTTS(_Chatterbox):
    """Multilingual Chatterbox (23 languages, pass `language_id`)."""

    FILES = MULTILINGUAL_FILES
    BASE_CONFIG = T3Config.multilingual()
    DEFAULT_REPETITION_PENALTY = 2.0
    PRESET_NAMES = presets.PRESETS

    @classmethod
    def _load_tokenizer(cls, path: Path):
        return MTLTokenizer.from_file(path)

    def _encode(self, text: str, language_id: str | None) -> list[int]:
        if not language_id:
            raise TextError("the multilingual model needs language_id (e.g. 'fr')")
        return self.tokenizer.encode(text, check_language(language_id))
