"""python -m inference.tts --text "..." --out out.wav [--voice ref.wav] [--model tiny|DIR|owner/repo] [--key value | key=value ...]

Synthesises a 24 kHz WAV with the settings of config.toml's [tts] section; every key is also a flag
(`--temperature 0.6` or `temperature=0.6`).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from .checkpoints import CheckpointError
from .settings import command_parser, parse_command


@dataclass
class TTSConfig:
    """`[tts]` of config.toml. Sampling settings left as None take the model family's defaults (README, "Models");
    a setting the family does not use (cfg_weight, min_p or exaggeration on Turbo/Nano; top_k on the others) is
    refused when set."""

    model: str = "tiny"  # a preset (tiny, tiny-multilingual, tiny-turbo, tiny-nano) | folder | HF repo id | adapter
    adapter: str = ""  # LoRA adapter folder from training to put on `model` ("": none)
    family: str = ""  # english | multilingual | turbo | nano; "": from the model's files (or its repo id)
    multilingual: bool = False  # load a folder/repo as the multilingual model (the same as family=multilingual)
    t3_model: str = ""  # multilingual only: v2 | v3 | <file>.safetensors in the folder ("": v2)
    device: str = "cpu"
    t3_dtype: str = "float32"  # float32 | bfloat16 | float16 | int8 (CPU): faster, slightly different (README)
    s3gen_dtype: str = "float32"  # float32 | bfloat16
    language: str | None = None  # multilingual only, e.g. "fr"
    exaggeration: float | None = None
    cfg_weight: float | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    min_p: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    alignment_guard: bool | None = None  # multilingual: the reference fork's alignment analyzer (v2 default: on)
    trim_last_token: bool | None = None  # cut the last speech token's 40 ms (upstream multilingual; v3 default: on)
    seed: int | None = 0
    watermark: bool = True  # Perth implicit watermark on the output

    def sampling(self) -> dict:
        """The sampling settings, as `generate` takes them (checked there, by SamplingConfig)."""
        from .models.t3.sampling import SAMPLING_FIELDS  # here: T3's modules take seconds to import, --help need not

        return {name: getattr(self, name) for name in SAMPLING_FIELDS}


def load_model(cfg: TTSConfig):
    import dataclasses

    from .chatterbox import load_chatterbox
    from .families import MULTILINGUAL

    model = load_chatterbox(cfg.model, cfg.multilingual, cfg.device, cfg.adapter or None, cfg.t3_dtype,
                            cfg.s3gen_dtype, cfg.family or None, cfg.t3_model or None)
    changes = {k: v for k in ("alignment_guard", "trim_last_token") if (v := getattr(cfg, k)) is not None}
    if changes and model.FAMILY is not MULTILINGUAL:
        raise ValueError(f"{', '.join(changes)} applies to the multilingual model only, not to {model.FAMILY.name}")
    if changes:
        model.decoding = dataclasses.replace(model.decoding, **changes)
    return model


def check_before_loading(args: argparse.Namespace, cfg: TTSConfig) -> None:
    """What can be refused without the model is refused before it takes seconds to load: empty text, settings
    the family does not use, a missing or too short reference."""
    from .loading import family_for
    from .models.tokenizers import TextError

    from .adapters import is_adapter

    if not args.text.strip():
        raise TextError("text is empty or only whitespace")
    if not is_adapter(cfg.model):  # an adapter's family is its base's, known once it is read
        family = family_for(cfg.model, cfg.multilingual, cfg.family or None)
        family.check_settings(**cfg.sampling(), exaggeration=cfg.exaggeration)
    if args.voice is not None:
        check_voice_file(args.voice, cfg)


def check_voice_file(path: Path, cfg: TTSConfig) -> None:
    """A missing file, or one too short for the family's voice rules (Turbo: over 5 s), is refused at once."""
    from .loading import family_for

    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    rules = family_for(cfg.model, cfg.multilingual, cfg.family or None).voice
    try:
        seconds = sf.info(str(path)).duration
    except RuntimeError:
        return  # not something soundfile reads: load_audio says why, with the model's other checks
    if rules.min_seconds is not None and not seconds > rules.min_seconds:
        raise ValueError(f"{path}: {rules.label} needs a reference longer than {rules.min_seconds:g} s; "
                         f"got {seconds:.1f} s")


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m inference.tts", TTSConfig, "tts", __doc__.splitlines()[0])
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True, type=Path, help="output WAV (24 kHz)")
    p.add_argument("--voice", type=Path, help="reference recording to clone (default: the model's built-in voice)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args, cfg = parse_command(parser, argv, TTSConfig, "tts")
        check_before_loading(args, cfg)
        return run(args, cfg)
    except (ValueError, FileNotFoundError, CheckpointError, RuntimeError) as e:  # user errors: the message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, cfg: TTSConfig) -> int:
    start = time.perf_counter()
    model = load_model(cfg)
    what = cfg.model + (f" with the adapter {cfg.adapter}" if cfg.adapter else "")
    print(f"loaded {what} in {time.perf_counter() - start:.1f}s on {cfg.device}", file=sys.stderr)

    start = time.perf_counter()
    wav = model.generate(args.text, cfg.language, args.voice, cfg.exaggeration, cfg.seed, cfg.watermark,
                         progress=True, **cfg.sampling())
    elapsed = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(args.out), wav[0].numpy(), model.sr)
    seconds = wav.shape[1] / model.sr
    print(f"wrote {seconds:.2f} s of 24 kHz audio to {args.out} in {elapsed:.1f}s "
          f"(real-time factor {elapsed / max(seconds, 1e-9):.2f}){'' if cfg.watermark else ', no watermark'}")
    if model.is_preset:
        print("note: tiny preset with random weights; this audio is not speech")
    return 0


if __name__ == "__main__":
    sys.exit(main())
