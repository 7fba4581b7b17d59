"""python -m inference.tts --text "..." --out out.npy [--model tiny|DIR|owner/repo] [--language fr] [key=value ...]

Synthesises with the settings of config.toml's [tts] section; `key=value` arguments override them.
Until S3Gen lands, the output is the generated 25 Hz speech-token sequence (.npy), not audio.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from .checkpoints import CheckpointError
from .settings import load_config


@dataclass
class TTSConfig:
    model: str = "tiny"  # 'tiny' | 'tiny-multilingual' | folder in the official layout | HF repo id
    multilingual: bool = False  # load a folder/repo as the multilingual model
    device: str = "cpu"
    language: str | None = None  # multilingual only, e.g. "fr"
    exaggeration: float = 0.5
    cfg_weight: float = 0.5
    temperature: float = 0.8
    repetition_penalty: float | None = None  # None: the model family's default (1.2 English, 2.0 multilingual)
    min_p: float = 0.05
    top_p: float = 1.0
    max_new_tokens: int = 1000
    seed: int | None = 0


def load_model(cfg: TTSConfig):
    from .chatterbox import ChatterboxMultilingualTTS, ChatterboxTTS

    multilingual = cfg.multilingual or cfg.model == "tiny-multilingual"
    cls = ChatterboxMultilingualTTS if multilingual else ChatterboxTTS
    return cls.load(cfg.model, cfg.device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference.tts", description=__doc__.splitlines()[0])
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True, type=Path, help="where to write the speech tokens (.npy)")
    p.add_argument("--model", help="overrides [tts] model")
    p.add_argument("--language", help="overrides [tts] language")
    p.add_argument("--config", help="config file (default: ./config.toml, else the project's)")
    p.add_argument("overrides", nargs="*", help="key=value settings of [tts], e.g. temperature=0.7")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    overrides = list(args.overrides)
    overrides += [f"model={args.model}"] if args.model else []
    overrides += [f"language={args.language}"] if args.language else []
    try:
        return run(args, load_config(TTSConfig, "tts", args.config, overrides))
    except (ValueError, FileNotFoundError, CheckpointError) as e:  # user errors: the message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, cfg: TTSConfig) -> int:
    start = time.perf_counter()
    model = load_model(cfg)
    print(f"loaded {cfg.model} in {time.perf_counter() - start:.1f}s on {cfg.device}", file=sys.stderr)

    sampling = {k: v for k, v in asdict(cfg).items()
                if k in ("cfg_weight", "temperature", "repetition_penalty", "min_p", "top_p", "max_new_tokens")}
    start = time.perf_counter()
    tokens = model.generate_speech_tokens(args.text, cfg.language, cfg.exaggeration, cfg.seed, progress=True,
                                          **sampling)
    elapsed = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, tokens.numpy())
    print(f"wrote {len(tokens)} speech tokens ({len(tokens) / 25:.2f} s of speech at 25 Hz) to {args.out} "
          f"in {elapsed:.1f}s")
    if model.is_preset:
        print("note: tiny preset with random weights; these tokens are not speech")
    return 0


if __name__ == "__main__":
    sys.exit(main())
