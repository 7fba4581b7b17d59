"""User-facing text-to-speech classes: they own the models, the device and the current voice.

text -> (T3) 25 Hz speech tokens -> (S3Gen) 24 kHz waveform -> Perth watermark.

What differs between model families is data (inference/families.py); loading is inference/loading.py; streaming
runs in inference/streaming/. This facade holds the voice and the calls users make.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import loading, presets
from .audio import load_audio
from .conditionals import Conditionals
from .families import ENGLISH, MULTILINGUAL, NANO, TURBO, Decoding, Family, multilingual_decoding, multilingual_t3_file
from .loading import T3_CONFIG_FILE, ModelParts
from .models.rates import TOKEN_SAMPLES
from .models.s3gen.s3gen import S3GEN_SR, RefDict, S3Gen
from .models.limits import WHOLE_PROMPT
from .models.t3 import T3, SamplingConfig
from .models.t3.sampling import SAMPLING_FIELDS
from .models.tokenizers import TextError
from .models.tokenizers.normalize import split_for_synthesis
from .models.voice_encoder import VoiceEncoder
from .streaming import PieceInputs, StreamChunk, StreamConfig, Utterance, make_streamer, run_stream
from .voice import build_conditionals

__all__ = ["Chatterbox", "ChatterboxTTS", "ChatterboxMultilingualTTS", "ChatterboxTurboTTS", "ChatterboxNanoTTS",
           "load_chatterbox", "T3_CONFIG_FILE"]

log = logging.getLogger(__name__)

# Reference clip limits of the original pipeline: T3 prompt from the first 6 s, S3Gen from the first 10 s
# (each family's own: Family.voice).
T3_PROMPT_SECONDS = 6
S3GEN_PROMPT_SECONDS = 10
STREAM_FIELDS = frozenset(f.name for f in dataclasses.fields(StreamConfig))


class Chatterbox:
    """One model of a family (`FAMILY`): ChatterboxTTS (English) and ChatterboxMultilingualTTS name theirs."""

    FAMILY: Family
    sr = S3GEN_SR  # output sample rate

    def __init__(self, t3: T3, s3gen: S3Gen, ve: VoiceEncoder, tokenizer, device: str | torch.device = "cpu",
                 conds: Conditionals | None = None, is_preset: bool = False, decoding: Decoding | None = None):
        self.device = torch.device(device)
        self.t3 = t3.to(self.device).eval()
        self.s3gen = s3gen.to(self.device).eval()
        self.ve = ve.to(self.device).eval()
        self.tokenizer = tokenizer
        self.conds = conds.to(self.device) if conds is not None else None
        self.is_preset = is_preset
        # what `utterance` starts from: the family's defaults (setup_model may change fade_duration)
        self.stream_config = StreamConfig(**self.FAMILY.stream)
        self.decoding = decoding or self.FAMILY.decoding
        if is_preset:
            log.warning(presets.WARNING)

    # ------------------------------------------------------------------ loading
    @property
    def decoding(self) -> Decoding:
        return self._decoding

    @decoding.setter
    def decoding(self, value: Decoding) -> None:
        """The alignment guard is T3's to run, in every decoding loop (alone or batched)."""
        self._decoding = value
        self.t3.alignment_guard = value.alignment_guard

    @classmethod
    def _from_parts(cls, parts: ModelParts, device, is_preset: bool = False, decoding: Decoding | None = None):
        return cls(parts.t3, parts.s3gen, parts.ve, parts.tokenizer, device, parts.conds, is_preset, decoding)

    @classmethod
    def from_local(cls, folder: str | Path, device: str | torch.device = "cpu", t3_model: str | None = None):
        """Load a folder in the official layout (also what our training writes). `t3_model`: multilingual only,
        "v2" | "v3" | "<file>.safetensors" (default: v2, or the folder's only T3 file)."""
        decoding = None
        if cls.FAMILY is MULTILINGUAL:
            decoding = multilingual_decoding(multilingual_t3_file(t3_model, Path(folder)))
        return cls._from_parts(loading.read_folder(cls.FAMILY, folder, t3_model), device, decoding=decoding)

    @classmethod
    def from_pretrained(cls, device: str | torch.device = "cpu", repo_id: str | None = None, revision: str = "main",
                        t3_model: str | None = None):
        return cls.from_local(loading.download(cls.FAMILY, repo_id, revision, t3_model), device, t3_model)

    @classmethod
    def from_preset(cls, name: str | None = None, device: str | torch.device = "cpu"):
        """The family's preset; 'tiny' names every family's preset (`--model tiny multilingual=true`).
        `synthetic-<family>` is the official size with synthetic weights and a 10 s voice: for timing."""
        name = name or cls.FAMILY.preset
        full_size = name == cls.FAMILY.synthetic_preset
        if name not in (cls.FAMILY.preset, ENGLISH.preset) and not full_size:
            names = sorted({cls.FAMILY.preset, ENGLISH.preset, cls.FAMILY.synthetic_preset})
            raise ValueError(f"{cls.__name__} takes the presets {', '.join(names)}, not {name!r}: "
                             f"load_chatterbox({name!r}) picks the class for any preset")
        model = cls._from_parts(loading.build_preset(cls.FAMILY, full_size), device, is_preset=True)
        # Turbo takes references over 5 s only; a full-size preset gets a voice as long as S3Gen's prompt can be
        seconds = S3GEN_PROMPT_SECONDS if full_size else max(3.0, (cls.FAMILY.voice.min_seconds or 0.0) + 1.0)
        model.prepare_conditionals_from_array(presets.synthetic_reference(S3GEN_SR, seconds), S3GEN_SR)
        return model

    @classmethod
    def load(cls, model: str | Path, device: str | torch.device = "cpu", t3_model: str | None = None):
        """`model` is the family's preset, a local folder, or a Hugging Face repo id."""
        source = loading.describe_source(model)
        if source == "preset":
            return cls.from_preset(str(model), device)
        if source == "folder":
            return cls.from_local(Path(model).expanduser(), device, t3_model)
        return cls.from_pretrained(device, repo_id=str(model), t3_model=t3_model)

    def parts(self) -> ModelParts:
        return ModelParts(self.t3, self.s3gen, self.ve, self.tokenizer, self.conds)

    def save_local(self, folder: str | Path) -> Path:
        """Write the official layout (plus t3_config.json when T3 is not of an official size)."""
        return loading.write_folder(self.parts(), self.FAMILY, folder)

    # ------------------------------------------------------------------ voice
    def prepare_conditionals(self, wav_path: str | Path, exaggeration: float | None = None) -> Conditionals:
        """Clone the voice of a reference recording (any format soundfile reads; 5-10 s of clean speech, Turbo and
        Nano: more than 5 s)."""
        wav = load_audio(wav_path, S3GEN_SR)
        return self.prepare_conditionals_from_array(wav, S3GEN_SR, exaggeration, source=str(wav_path))

    def prepare_conditionals_from_array(self, wav, sample_rate: int, exaggeration: float | None = None,
                                        source: str = "reference") -> Conditionals:
        """As each family's reference does it (inference/voice.py): T3 gets the voice-encoder embedding of the
        whole clip and the speech tokens of its first seconds, S3Gen `embed_ref` of the first 10 s."""
        self.conds = build_conditionals(np.asarray(wav, dtype=np.float32), sample_rate, s3gen=self.s3gen, ve=self.ve,
                                        prompt_len=self.t3.cfg.speech_cond_prompt_len, rules=self.FAMILY.voice,
                                        exaggeration=self._exaggeration(exaggeration), device=self.device,
                                        source=source)
        return self.conds

    def _exaggeration(self, value: float | None) -> float:
        """The family's default when unset; refused where the family has no emotion conditioning."""
        self.FAMILY.check_settings(exaggeration=value)
        return (0.0 if self.t3.cfg.is_gpt2 else 0.5) if value is None else float(value)

    # ------------------------------------------------------------------ synthesis
    def text_tokens(self, text: str, language_id: str | None = None) -> torch.Tensor:
        """Normalised, tokenized text with start/stop tokens: (1, n) on the model's device. Control tokens typed in
        the text go before normalisation, which would otherwise see `[STOP]` as the text's last word."""
        if not isinstance(text, str) or not text.strip():
            raise TextError("text is empty or only whitespace")
        text = self.FAMILY.normalize(self.tokenizer.drop_control_tokens(text))
        ids = self.FAMILY.encode(self.tokenizer, text, language_id)
        cfg = self.t3.cfg
        if len(ids) > cfg.max_text_tokens:
            raise TextError(f"text is {len(ids)} tokens long; the model takes at most {cfg.max_text_tokens} "
                            "per call. Split it into sentences.")
        tokens = torch.tensor([ids], dtype=torch.long, device=self.device)
        if cfg.is_gpt2:  # Turbo and Nano take the BPE ids alone
            return tokens
        tokens = F.pad(tokens, (1, 0), value=cfg.start_text_token)
        return F.pad(tokens, (0, 1), value=cfg.stop_text_token)

    def sampling_config(self, **overrides) -> SamplingConfig:
        """The family's defaults (and this version's repetition penalty) under `overrides`; settings the family
        does not use are refused, not ignored."""
        self.FAMILY.check_settings(**overrides)
        base = self.FAMILY.sampling
        if self.decoding.repetition_penalty is not None:
            base = dataclasses.replace(base, repetition_penalty=self.decoding.repetition_penalty)
        return SamplingConfig(**{**asdict(base), **{k: v for k, v in overrides.items() if v is not None}})

    def iter_speech_tokens(self, text: str, language_id: str | None = None, exaggeration: float | None = None,
                           seed: int | None = None, **sampling) -> Iterator[int]:
        """Raw decoder output token by token (stop token included when reached).

        `sampling` takes SamplingConfig fields (cfg_weight, temperature, repetition_penalty, min_p,
        top_p, max_new_tokens); None means the model family's default.
        """
        if self.conds is None:
            raise RuntimeError("no voice loaded: the model folder has no conds.pt; prepare conditionals first")
        tokens = self.text_tokens(text, language_id)
        cond = self.conds.t3.with_exaggeration(self._exaggeration(exaggeration))
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        yield from self.t3.generate_tokens(cond, tokens, self.sampling_config(**sampling), generator=generator)

    def generate_speech_tokens(self, text: str, language_id: str | None = None, exaggeration: float | None = None,
                               seed: int | None = None, progress: bool = False, **sampling) -> torch.Tensor:
        """Text -> 1-D tensor of speech tokens for S3Gen: cut at the stop token, specials removed."""
        ids = []
        with tqdm(total=self.sampling_config(**sampling).max_new_tokens, disable=not progress,
                  desc="speech tokens", unit="tok") as bar:
            for token in self.iter_speech_tokens(text, language_id, exaggeration, seed, **sampling):
                if token == self.t3.cfg.stop_speech_token:
                    break
                ids.append(token)
                bar.update(1)
        ids = torch.tensor(ids, dtype=torch.long)
        return ids[ids < self.t3.cfg.start_speech_token]

    def generate(self, text: str, language_id: str | None = None, audio_prompt_path: str | Path | None = None,
                 exaggeration: float | None = None, seed: int | None = None, watermark: bool = True,
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
            spoken = len(tokens)
            tokens = torch.cat([tokens, torch.tensor(self.FAMILY.tail_tokens, dtype=torch.long)])
            audio = self.s3gen.inference(tokens.to(self.device), ref, generator=generator)[0].cpu()
            if self.decoding.trim_last_token:  # upstream multilingual: the last token's 40 ms go
                audio = audio[: max(1, spoken - 1) * TOKEN_SAMPLES]
            pieces.append(audio)
        wav = torch.cat(pieces) if pieces else torch.zeros(0)
        if watermark and len(wav):
            from .watermark import apply_watermark

            wav = torch.from_numpy(apply_watermark(wav.numpy(), self.sr))
        return wav[None]


    # ------------------------------------------------------------------ streaming
    def setup_model(self, audio_prompt_path: str | Path | None = None, exaggeration: float | None = None,
                    fade_duration: int = StreamConfig.fade_duration) -> None:
        """Do once, before requests, what every stream would otherwise redo: the voice's conditionals,
        the vocoder's weight-normed weights, the fade windows (checked here) and one warm-up decode."""
        if audio_prompt_path is not None:
            self.prepare_conditionals(audio_prompt_path, exaggeration)
        if self.conds is None:
            raise RuntimeError("no voice: pass audio_prompt_path or call prepare_conditionals first")
        self.stream_config = StreamConfig(**{**self.FAMILY.stream, "fade_duration": fade_duration})
        streamer = make_streamer(self.s3gen, RefDict.from_dict(self.conds.gen), self.stream_config,
                                 torch.Generator().manual_seed(0))
        streamer.push([0] * 10)  # warm-up: first-call allocations happen here, not in the first request
        streamer.finish()

    def stream_settings(self, stream: StreamConfig | None = None, sampling: SamplingConfig | None = None,
                        **options) -> tuple[StreamConfig, SamplingConfig]:
        """The stream's settings from config objects and/or keyword options (StreamConfig and SamplingConfig field
        names, as `generate_stream(chunk_size=10, temperature=0.6)` takes them); None leaves the default, and
        prompt_tokens=0 asks for the whole voice prompt."""
        unknown = set(options) - STREAM_FIELDS - set(SAMPLING_FIELDS)
        if unknown:
            raise TypeError(f"unknown streaming option(s) {', '.join(sorted(unknown))}; stream options: "
                            f"{', '.join(sorted(STREAM_FIELDS))}; sampling: {', '.join(sorted(SAMPLING_FIELDS))}")
        given = {k: v for k, v in options.items() if v is not None}
        self.FAMILY.check_settings(**given)
        streaming = {k: v for k, v in given.items() if k in STREAM_FIELDS}
        if streaming.get("prompt_tokens") == WHOLE_PROMPT:  # as config files say "all of it" (TOML has no None)
            streaming["prompt_tokens"] = None
        stream = dataclasses.replace(stream or self.stream_config, **streaming)
        sampling = dataclasses.replace(sampling or self.sampling_config(),
                                       **{k: v for k, v in given.items() if k in SAMPLING_FIELDS})
        return stream, sampling

    def utterance(self, text: str, language_id: str | None = None, conds: Conditionals | None = None,
                  exaggeration: float | None = None, seed: int | None = None, max_chars_per_call: int = 300, *,
                  stream: StreamConfig | None = None, sampling: SamplingConfig | None = None,
                  **options) -> Utterance:
        """The state of one streamed text, apart from how its tokens are decoded: `generate_stream` decodes them
        alone, the server in a batch with other requests. `conds` defaults to the current voice. Everything that
        can be refused (text, language, settings) is checked here, before any audio."""
        conds = conds or self.conds
        if conds is None:
            raise RuntimeError("no voice: pass audio_prompt_path or call prepare_conditionals first")
        stream, sampling = self.stream_settings(stream, sampling, **options)
        cond = conds.t3.with_exaggeration(self._exaggeration(exaggeration))
        inputs = [PieceInputs(cond, self.text_tokens(piece, language_id), sampling, None if seed is None else seed + i)
                  for i, piece in enumerate(split_for_synthesis(text, max_chars_per_call))]
        cfg = self.t3.cfg
        return Utterance(self.s3gen, RefDict.from_dict(conds.gen), stream, inputs, cfg.stop_speech_token,
                         cfg.start_speech_token, self.FAMILY.tail_tokens, self.decoding.trim_last_token)

    def generate_stream(self, text: str, language_id: str | None = None, audio_prompt_path: str | Path | None = None,
                        exaggeration: float | None = None, *, seed: int | None = None, max_chars_per_call: int = 300,
                        stream: StreamConfig | None = None, sampling: SamplingConfig | None = None,
                        stop: threading.Event | None = None, run_ahead: bool = True,
                        **options) -> Iterator[StreamChunk]:
        """Yields StreamChunk(audio, metrics) as T3 produces speech tokens: `audio` float32 24 kHz numpy.

        Concatenating every chunk's audio gives the whole utterance. Text longer than `max_chars_per_call` is
        split at sentence ends and the pieces streamed in turn. Settings come as `stream` (StreamConfig: chunk
        sizes, strategy, fades, prompt_tokens) and `sampling` (SamplingConfig), or as keyword options with their
        field names (`chunk_size=10, temperature=0.6`), which override the objects. `stop` (a threading.Event)
        ends the stream early. Not watermarked: Perth marks whole clips.

        `run_ahead` lets T3 make the next tokens in a thread while S3Gen makes audio after the first chunk
        (inference/streaming/runtime.py); `run_ahead=False` keeps taking turns (for a process pinned to one core).
        """
        if audio_prompt_path is not None:
            self.prepare_conditionals(audio_prompt_path, exaggeration)
        utterance = self.utterance(text, language_id, None, exaggeration, seed, max_chars_per_call, stream=stream,
                                   sampling=sampling, **options)
        yield from run_stream(utterance, self._decode_piece, self.device, stop, run_ahead)

    def _decode_piece(self, piece: PieceInputs) -> Iterator[int]:
        generator = torch.Generator(device=self.device).manual_seed(piece.seed) if piece.seed is not None else None
        return self.t3.generate_tokens(piece.cond, piece.text_tokens, piece.sampling, generator=generator)


class ChatterboxTTS(Chatterbox):
    """English Chatterbox."""

    FAMILY = ENGLISH


class ChatterboxMultilingualTTS(Chatterbox):
    """Multilingual Chatterbox (23 languages, pass `language_id`); v2 or v3 weights (`t3_model`)."""

    FAMILY = MULTILINGUAL


class ChatterboxTurboTTS(Chatterbox):
    """Chatterbox Turbo: GPT-2 medium T3, 2-step meanflow S3Gen, paralinguistic tags (`[laugh]`, `[cough]`...)."""

    FAMILY = TURBO


class ChatterboxNanoTTS(Chatterbox):
    """Chatterbox Nano: Turbo's design with GPT-2 small, for CPUs and devices."""

    FAMILY = NANO


CLASSES = {cls.FAMILY.name: cls for cls in (ChatterboxTTS, ChatterboxMultilingualTTS, ChatterboxTurboTTS,
                                            ChatterboxNanoTTS)}


def load_chatterbox(model: str | Path, multilingual: bool = False, device: str | torch.device = "cpu",
                    adapter: str | Path | None = None, t3_dtype: str = "float32",
                    s3gen_dtype: str = "float32", family: str | None = None,
                    t3_model: str | None = None) -> Chatterbox:
    """A preset | a folder in the official layout | a repo id | a LoRA adapter folder written by training (its
    base is loaded and the adapter merged into it in memory).

    `family` names the model family (english, multilingual, turbo, nano) where the source does not tell it (a repo
    id other than the official ones); a folder's files decide otherwise, and a contradiction is refused.
    `t3_model`: multilingual only, "v2" (default) | "v3" | "<file>.safetensors" (a single-language pack).

    `adapter`: a LoRA adapter folder to put on `model`; it must have been trained on that base. The family comes
    from the source (a folder's T3 file, a preset's name, an adapter's recorded base), else `multilingual`.
    `t3_dtype` / `s3gen_dtype`: reduced precision for speed (inference.precision), applied after the adapter.
    """
    from .adapters import adapter_base, apply_adapter, is_adapter, read_base_identity
    from .precision import check_dtypes, set_s3gen_dtype, set_t3_dtype

    check_dtypes(t3_dtype, s3gen_dtype)
    if adapter is None and is_adapter(model):
        adapter, model = model, adapter_base(model)
        try:
            loading.describe_source(model)
        except FileNotFoundError:
            raise FileNotFoundError(f"the adapter {adapter} was trained on {model}, which is not found here: pass "
                                    f"the base with --model and the adapter with --adapter {adapter}") from None
    if adapter is not None and (read_base_identity(adapter) or {}).get("family") == MULTILINGUAL.name:
        multilingual = True  # a hint only: a base of another family is refused by apply_adapter, with both named
    found = loading.family_for(model, multilingual, family)
    if t3_model and found is not MULTILINGUAL:
        raise ValueError(f"t3_model={t3_model!r} applies to the multilingual model only; {model} is {found.name}")
    loaded = CLASSES[found.name].load(model, device, t3_model or None)
    if adapter is not None:
        apply_adapter(loaded, adapter)
    loaded.t3 = set_t3_dtype(loaded.t3, t3_dtype)
    set_s3gen_dtype(loaded.s3gen, s3gen_dtype)
    loaded.decoding = loaded.decoding  # the adapter or the precision may have put a new T3 in place
    return loaded
