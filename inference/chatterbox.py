"""User-facing text-to-speech classes: they own the models, the device and the current voice.

text -> (T3) 25 Hz speech tokens -> (S3Gen) 24 kHz waveform -> Perth watermark.
"""
from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import presets
from .checkpoints import (ENGLISH_FILES, MULTILINGUAL_FILES, REPO_ID, CheckpointError, ModelFiles, download_model,
                          find_weights, load_module, save_module)
from .audio import AudioError, load_audio
from .conditionals import Conditionals
from .streaming import (StreamChunk, StreamClock, StreamConfig, iterate_ahead, make_streamer, split_threads,
                        torch_threads)
from .models.s3gen.hifigan import remap_weight_norm_keys
from .models.s3gen.s3gen import S3GEN_SR, S3_SR, RefDict, S3Gen
from .models.t3 import T3, SamplingConfig, T3Cond, T3Config
from .models.tokenizers import EnTokenizer, MTLTokenizer, TextError, normalize_text
from .models.tokenizers.normalize import split_for_synthesis
from .models.tokenizers.languages import check_language
from .models.voice_encoder import VoiceEncoder

log = logging.getLogger(__name__)

# Written beside the weights only when T3 is not of an official size (the tiny preset, experiments).
T3_CONFIG_FILE = "t3_config.json"

# Reference clip limits of the official pipeline: T3 prompt from the first 6 s, S3Gen from the first 10 s.
T3_PROMPT_SECONDS = 6
S3GEN_PROMPT_SECONDS = 10
MAX_REFERENCE_SECONDS = 60  # longer references are cut here (the voice embedding gains nothing beyond)
MIN_REFERENCE_SECONDS = 0.5


def _constant_buffer(key: str) -> bool:
    """S3Gen entries a file may lack because the module rebuilds them (the English load is lenient)."""
    return key in ("tokenizer._mel_filters", "tokenizer.window") or key.endswith("num_batches_tracked")


def check_reference(wav, sample_rate: int, source: str = "reference"):
    """Specific errors for unusable voice references; long ones are cut to MAX_REFERENCE_SECONDS."""
    import numpy as np

    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise AudioError(f"{source}: expected mono audio, got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise AudioError(f"{source}: contains NaN or infinite samples")
    peak = float(np.abs(wav).max(initial=0.0))
    if peak < 1e-4:
        raise AudioError(f"{source}: the audio is silent (peak {peak:.1e})")
    voiced = np.abs(wav) > 0.01 * peak
    if voiced.sum() < MIN_REFERENCE_SECONDS * sample_rate * 0.5 or len(wav) < MIN_REFERENCE_SECONDS * sample_rate:
        raise AudioError(f"{source}: {len(wav) / sample_rate:.2f} s is too short; give at least "
                         f"{MIN_REFERENCE_SECONDS} s of speech (5-10 s works best)")
    clipped = float((np.abs(wav) >= 0.999).mean())
    if clipped > 0.01:
        log.warning("%s: %.1f%% of samples are clipped; the cloned voice will sound distorted",
                    source, 100 * clipped)
    if len(wav) > MAX_REFERENCE_SECONDS * sample_rate:
        log.info("%s: using the first %d s of %.0f s", source, MAX_REFERENCE_SECONDS, len(wav) / sample_rate)
        wav = wav[: MAX_REFERENCE_SECONDS * sample_rate]
    return wav


class _Chatterbox(ABC):
    FILES: ModelFiles
    BASE_CONFIG: T3Config
    DEFAULT_REPETITION_PENALTY: float
    PRESET_NAMES: tuple[str, ...]
    LENIENT_S3GEN: bool

    sr = S3GEN_SR  # output sample rate

    def __init__(self, t3: T3, s3gen: S3Gen, ve: VoiceEncoder, tokenizer, device: str | torch.device = "cpu",
                 conds: Conditionals | None = None, is_preset: bool = False):
        self.device = torch.device(device)
        self.t3 = t3.to(self.device).eval()
        self.s3gen = s3gen.to(self.device).eval()
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
        missing = [f for f in (cls.FILES.t3, cls.FILES.s3gen, cls.FILES.ve) if not find_weights(folder, f).is_file()]
        missing += [] if (folder / cls.FILES.tokenizer).is_file() else [cls.FILES.tokenizer]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {', '.join(missing)} (expected the official layout: "
                                    f"{', '.join(cls.FILES.all())})")
        t3 = load_module(T3(cls._read_t3_config(folder), init_weights=False), find_weights(folder, cls.FILES.t3))
        ve = load_module(VoiceEncoder(), find_weights(folder, cls.FILES.ve))
        s3gen = load_module(S3Gen(), find_weights(folder, cls.FILES.s3gen), remap=remap_weight_norm_keys,
                            may_be_missing=_constant_buffer, ignore_unexpected=cls.LENIENT_S3GEN)
        tokenizer = cls._load_tokenizer(folder / cls.FILES.tokenizer)
        if tokenizer.vocab_size > t3.cfg.text_vocab_size:
            raise CheckpointError(f"{cls.FILES.tokenizer} has {tokenizer.vocab_size} tokens but T3 only "
                                  f"{t3.cfg.text_vocab_size} text embeddings")
        conds = Conditionals.load(folder / cls.FILES.conds) if (folder / cls.FILES.conds).is_file() else None
        return cls(t3, s3gen, ve, tokenizer, device, conds)

    @classmethod
    def from_pretrained(cls, device: str | torch.device = "cpu", repo_id: str = REPO_ID, revision: str = "main"):
        return cls.from_local(download_model(cls.FILES, repo_id, revision), device)

    @classmethod
    def from_preset(cls, name: str = "tiny", device: str | torch.device = "cpu"):
        if name not in cls.PRESET_NAMES:
            raise ValueError(f"{cls.__name__} has the presets {cls.PRESET_NAMES}, not {name!r}")
        multilingual = cls.BASE_CONFIG.is_multilingual
        t3, s3gen = presets.tiny_t3(multilingual), presets.synthetic_s3gen()
        model = cls(t3, s3gen, presets.tiny_voice_encoder(), presets.tiny_tokenizer(multilingual), device,
                    is_preset=True)
        model.prepare_conditionals_from_array(presets.synthetic_reference(S3GEN_SR), S3GEN_SR)
        return model

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
        save_module(self.s3gen, folder / self.FILES.s3gen)
        self.tokenizer.save(folder / self.FILES.tokenizer)
        if self.conds is not None:
            self.conds.save(folder / self.FILES.conds)
        if self.t3.cfg != self.BASE_CONFIG:
            (folder / T3_CONFIG_FILE).write_text(json.dumps(asdict(self.t3.cfg), indent=1))
        else:
            (folder / T3_CONFIG_FILE).unlink(missing_ok=True)
        return folder

    # ------------------------------------------------------------------ voice
    def prepare_conditionals(self, wav_path: str | Path, exaggeration: float = 0.5) -> Conditionals:
        """Clone the voice of a reference recording (any format soundfile reads; 5-10 s of clean speech)."""
        wav = load_audio(wav_path, S3GEN_SR)
        return self.prepare_conditionals_from_array(wav, S3GEN_SR, exaggeration, source=str(wav_path))

    def prepare_conditionals_from_array(self, wav, sample_rate: int, exaggeration: float = 0.5,
                                        source: str = "reference") -> Conditionals:
        """As the reference: T3 gets the voice-encoder embedding of the whole clip and the speech tokens of
        its first 6 s; S3Gen gets `embed_ref` of the first 10 s."""
        import librosa

        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise AudioError(f"{source}: expected mono audio, got shape {wav.shape}")
        if sample_rate != S3GEN_SR:
            wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=S3GEN_SR)
        wav = check_reference(wav, S3GEN_SR, source)
        ref_16k = librosa.resample(wav, orig_sr=S3GEN_SR, target_sr=S3_SR)
        gen = self.s3gen.embed_ref(wav[: S3GEN_PROMPT_SECONDS * S3GEN_SR], S3GEN_SR)
        plen = self.t3.cfg.speech_cond_prompt_len
        prompt_16k = torch.from_numpy(ref_16k[: T3_PROMPT_SECONDS * S3_SR]).to(self.device)
        prompt_tokens, _ = self.s3gen.tokenizer([prompt_16k], max_len=plen)
        speaker = self.ve.embed_speaker([ref_16k], S3_SR).to(self.device)
        t3 = T3Cond(speaker_emb=speaker, cond_prompt_speech_tokens=torch.atleast_2d(prompt_tokens).to(self.device),
                    emotion_adv=torch.full((1, 1, 1), float(exaggeration), device=self.device))
        self.conds = Conditionals(t3, gen.as_dict())
        return self.conds

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

    def generate(self, text: str, language_id: str | None = None, audio_prompt_path: str | Path | None = None,
                 exaggeration: float = 0.5, seed: int | None = None, watermark: bool = True,
                 progress: bool = False, max_chars_per_call: int = 300, **sampling) -> torch.Tensor:
        """Text -> (1, samples) 24 kHz waveform, watermarked unless `watermark=False`.

        Text longer than `max_chars_per_call` is split at sentence ends and synthesised piece by piece
        (never truncated). `sampling` takes SamplingConfig fields; defaults are the reference's.
        """
        if audio_prompt_path is not None:
            self.prepare_conditionals(audio_prompt_path, exaggeration)
        if self.conds is None:
            raise RuntimeError("no voice: pass audio_prompt_path or call prepare_conditionals first")
        ref = RefDict.from_dict(self.conds.gen)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        pieces = []
        for i, piece in enumerate(split_for_synthesis(text, max_chars_per_call)):
            piece_seed = None if seed is None else seed + i
            tokens = self.generate_speech_tokens(piece, language_id, exaggeration, piece_seed, progress, **sampling)
            if len(tokens) == 0:
                log.warning("no speech tokens for %r; skipping it", piece[:60])
                continue
            pieces.append(self.s3gen.inference(tokens.to(self.device), ref, generator=generator)[0].cpu())
        wav = torch.cat(pieces) if pieces else torch.zeros(0)
        if watermark and len(wav):
            from .watermark import apply_watermark

            wav = torch.from_numpy(apply_watermark(wav.numpy(), self.sr))
        return wav[None]


    # ------------------------------------------------------------------ streaming
    def setup_model(self, audio_prompt_path: str | Path | None = None, exaggeration: float = 0.5,
                    fade_duration: int = StreamConfig.fade_duration) -> None:
        """Do once, before requests, what every stream would otherwise redo: the voice's conditionals,
        the vocoder's weight-normed weights, the fade windows (checked here) and one warm-up decode."""
        if audio_prompt_path is not None:
            self.prepare_conditionals(audio_prompt_path, exaggeration)
        if self.conds is None:
            raise RuntimeError("no voice: pass audio_prompt_path or call prepare_conditionals first")
        self.stream_defaults = StreamConfig(fade_duration=fade_duration)
        streamer = make_streamer(self.s3gen, RefDict.from_dict(self.conds.gen), self.stream_defaults,
                                 torch.Generator().manual_seed(0))
        streamer.push([0] * 10)  # warm-up: first-call allocations happen here, not in the first request
        streamer.finish()

    def utterance(self, text: str, language_id: str | None = None, conds: Conditionals | None = None,
                  exaggeration: float = 0.5, chunk_size: int = 25, strategy: str = "incremental",
                  context_window: int = 50, fade: str = "hann", fade_duration: int | None = None,
                  prompt_tokens: int | None = None, seed: int | None = None, max_chars_per_call: int = 300,
                  max_chunk_size: int | None = None, **sampling) -> "Utterance":
        """The state of one streamed text, apart from how its tokens are decoded: `generate_stream` decodes them
        alone, the server in a batch with other requests. `conds` defaults to the current voice. Everything that
        can be refused (text, language, settings) is checked here, before any audio."""
        conds = conds or self.conds
        if conds is None:
            raise RuntimeError("no voice: pass audio_prompt_path or call prepare_conditionals first")
        defaults = getattr(self, "stream_defaults", StreamConfig())
        cfg = StreamConfig(strategy=strategy, chunk_size=chunk_size, context_window=context_window, fade=fade,
                           fade_duration=defaults.fade_duration if fade_duration is None else fade_duration,
                           prompt_tokens=prompt_tokens, max_chunk_size=max_chunk_size)
        pieces = split_for_synthesis(text, max_chars_per_call)
        sampling_cfg = self.sampling_config(**sampling)
        cond = conds.t3.with_exaggeration(exaggeration)
        inputs = [PieceInputs(cond, self.text_tokens(piece, language_id), sampling_cfg,
                              None if seed is None else seed + i) for i, piece in enumerate(pieces)]
        return Utterance(self, RefDict.from_dict(conds.gen), cfg, inputs)

    def generate_stream(self, text: str, language_id: str | None = None, audio_prompt_path: str | Path | None = None,
                        exaggeration: float = 0.5, chunk_size: int = 25, strategy: str = "incremental",
                        context_window: int = 50, fade: str = "hann", fade_duration: int | None = None,
                        prompt_tokens: int | None = None, seed: int | None = None, max_chars_per_call: int = 300, stop=None,
                        max_chunk_size: int | None = None, run_ahead: bool = True,
                        **sampling) -> Iterator[StreamChunk]:
        """Yields StreamChunk(audio, metrics) as T3 produces speech tokens: `audio` float32 24 kHz numpy.

        Concatenating every chunk's audio gives the whole utterance. Text longer than `max_chars_per_call` is
        split at sentence ends and the pieces streamed in turn. `sampling` takes SamplingConfig fields (cfg_weight,
        temperature, repetition_penalty, min_p, top_p, max_new_tokens). The first chunk has `chunk_size` tokens,
        later ones double up to `max_chunk_size` (StreamConfig). `prompt_tokens` bounds the voice prompt decoded
        with each chunk. `stop` (a threading.Event) ends the stream early. Not watermarked: Perth marks whole
        clips.

        Until the first chunk is out, T3 and S3Gen take turns, each with every thread: nothing competes with the
        first audio. After it, `run_ahead` lets T3 make the next tokens in a thread while S3Gen makes audio; on a
        CPU the two split the threads (`split_threads`), so they do not oversubscribe the cores. `run_ahead=False`
        keeps taking turns (for a process pinned to one core).
        """
        if audio_prompt_path is not None:
            self.prepare_conditionals(audio_prompt_path, exaggeration)
        utterance = self.utterance(text, language_id, None, exaggeration, chunk_size, strategy, context_window, fade,
                                   fade_duration, prompt_tokens, seed, max_chars_per_call, max_chunk_size, **sampling)

        def all_tokens() -> Iterator[int | None]:
            """Every piece's speech tokens, None after each: one producer, so T3 can start piece n+1 while
            S3Gen is still turning piece n into audio."""
            for piece in utterance.pieces:
                generator = torch.Generator(device=self.device).manual_seed(piece.seed) \
                    if piece.seed is not None else None
                yield from self.t3.generate_tokens(piece.cond, piece.text_tokens, piece.sampling, generator=generator)
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
        t3_threads, s3gen_threads = split_threads(self.device) if run_ahead else (None, None)
        t3_done = threading.Event()  # then S3Gen gets every thread back
        rest = iterate_ahead(tokens, stop, t3_threads, t3_done) if run_ahead else tokens
        for token in rest:
            if stop is not None and stop.is_set():
                return  # tokens T3 made ahead are dropped unheard
            with torch_threads(None if t3_done.is_set() else s3gen_threads):
                chunk = utterance.feed(token)
            if chunk is not None:
                yield chunk
                utterance.clock.resume()


@dataclass
class PieceInputs:
    """What T3 decodes for one piece of an utterance."""

    cond: T3Cond
    text_tokens: torch.Tensor  # (1, n) with start/stop
    sampling: SamplingConfig
    seed: int | None


class Utterance:
    """Speech tokens in (None closes a piece), audio chunks out: the S3Gen half of a stream."""

    def __init__(self, model: _Chatterbox, ref: RefDict, cfg: StreamConfig, pieces: list[PieceInputs]):
        self.model, self.ref, self.cfg, self.pieces = model, ref, cfg, pieces
        self.stop_token, self.first_special = model.t3.cfg.stop_speech_token, model.t3.cfg.start_speech_token
        self.clock = StreamClock()
        self.index, self.pending = 0, []
        self.chunks = 0  # pushed so far, over all pieces: chunk sizes keep growing from one piece to the next
        self.streamer = self._streamer(0)
        self.stopped = False  # the current piece's stop token was seen: what T3 adds after it is not speech
        self.done = False  # every piece ended

    def _streamer(self, index: int):
        seed = self.pieces[index].seed
        return make_streamer(self.model.s3gen, self.ref, self.cfg,
                             torch.Generator().manual_seed(seed) if seed is not None else None)

    def feed(self, token: int | None) -> StreamChunk | None:
        """Take T3's next output (a raw token, or None at the end of a piece); a chunk when one is complete."""
        if self.done:
            raise RuntimeError("the utterance has ended")
        if token is not None:
            if token == self.stop_token:
                self.stopped = True
            if self.stopped or token >= self.first_special:
                return None
            self.pending.append(token)
            if len(self.pending) < self.cfg.chunk_tokens(self.chunks):
                return None
            audio, self.pending = self.streamer.push(self.pending), []
            self.chunks += 1
        else:
            audio, self.pending = np.concatenate([self.streamer.push(self.pending), self.streamer.finish()]), []
            work = self.streamer.work[-1] if self.streamer.work else None
            capped = not self.stopped  # T3 ran out of max_new_tokens: the piece may be cut short
            self.index += 1
            self.stopped = False
            if self.index < len(self.pieces):
                self.streamer = self._streamer(self.index)
            else:
                self.done = True
            return self.clock.chunk(audio, work, capped) if len(audio) else None
        return self.clock.chunk(audio, self.streamer.work[-1] if self.streamer.work else None) if len(audio) else None

    def tokens_to_next_chunk(self) -> int:
        return self.cfg.chunk_tokens(self.chunks) - len(self.pending)


class ChatterboxTTS(_Chatterbox):
    """English Chatterbox."""

    FILES = ENGLISH_FILES
    BASE_CONFIG = T3Config.english()
    DEFAULT_REPETITION_PENALTY = 1.2
    PRESET_NAMES = ("tiny",)
    LENIENT_S3GEN = True  # the reference loads the English s3gen.safetensors with strict=False

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
    LENIENT_S3GEN = False

    @classmethod
    def _load_tokenizer(cls, path: Path):
        return MTLTokenizer.from_file(path)

    def _encode(self, text: str, language_id: str | None) -> list[int]:
        if not language_id:
            raise TextError("the multilingual model needs language_id (e.g. 'fr')")
        return self.tokenizer.encode(text, check_language(language_id))


def load_chatterbox(model: str | Path, multilingual: bool = False, device: str | torch.device = "cpu",
                    adapter: str | Path | None = None, t3_dtype: str = "float32",
                    s3gen_dtype: str = "float32") -> _Chatterbox:
    """'tiny' | 'tiny-multilingual' | a folder in the official layout | a repo id | a LoRA adapter folder written
    by training (its base is loaded and the adapter merged into it in memory).

    `adapter`: a LoRA adapter folder to put on `model`; it must have been trained on that base. A folder holding
    the multilingual T3 file, or an adapter of the multilingual model, loads as the multilingual model.
    `t3_dtype` / `s3gen_dtype`: reduced precision for speed (inference.precision), applied after the adapter.
    """
    from .adapters import adapter_base, apply_adapter, is_adapter, read_base_identity
    from .precision import check_dtypes, set_t3_dtype

    check_dtypes(t3_dtype, s3gen_dtype)

    if adapter is None and is_adapter(model):
        adapter, model = model, adapter_base(model)
        if not (str(model) in presets.PRESETS or Path(model).exists() or str(model).count("/") == 1):
            raise FileNotFoundError(f"the adapter {adapter} was trained on {model}, which is not found here: pass "
                                    f"the base with --model and the adapter with --adapter {adapter}")
    if adapter is not None and (read_base_identity(adapter) or {}).get("family") == "multilingual":
        multilingual = True
    folder = Path(model)
    multilingual = (multilingual or str(model) == "tiny-multilingual"
                    or (folder.is_dir() and find_weights(folder, MULTILINGUAL_FILES.t3).is_file()))
    cls = ChatterboxMultilingualTTS if multilingual else ChatterboxTTS
    loaded = cls.load(model, device)
    if adapter is not None:
        apply_adapter(loaded, adapter)
    loaded.t3 = set_t3_dtype(loaded.t3, t3_dtype)
    loaded.s3gen.flow_dtype = s3gen_dtype
    return loaded
