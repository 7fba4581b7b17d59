"""Is the fine-tuned voice better than the base model, and is it still fast? Base vs tuned, same sentences, same seeds.

    python -m evaluation                                              # [evaluation] of config.toml
    python -m evaluation --tuned-model-path checkpoints_dir/<run>/merged
    python -m evaluation --tuned-model-path latest --samples-per-sentence 3 --output-dir evaluation_runs/mine
    python -m evaluation --resume                                     # continue the newest (interrupted) run
    python -m evaluation --compare evaluation_runs/a evaluation_runs/b   # two finished runs, nothing regenerated

Recipe:
  1. check everything before any work: the config, both model paths, the sentences, the reference clip(s), the
     ASR and speaker-verification models, and that the output folder is new or holds this same configuration;
  2. for each model (base, then tuned) and each (sentence, sample) not already done: stream it through
     `generate_stream` (time to first audio, per-chunk compute, real-time factor, underruns of a real-time
     player), write the WAV, transcribe it with Whisper (WER, CER after TTS-benchmark normalisation), score
     speaker similarity against the reference with an independent verification model (plus, secondary and
     biased, with the model's own voice encoder), and append one row to results.jsonl;
  3. summary statistics, base-vs-tuned deltas with paired significance, plots and report.md / report.html.

Each run gets its own folder: `--output-dir D` (report.md lands in D), else evaluation_runs/eval-<date>-<time>/.
A failed sample (exception, empty or non-finite audio) is recorded with its error and the run goes on. The same
`--output-dir` again, or `--resume` for the newest dated run, continues a run: finished samples are skipped,
failed ones are retried; a changed configuration is refused. Both models speak with the voice of the first reference clip.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from inference.audio import load_audio
from inference.adapters import adapter_base, is_adapter, on_synthetic_base, read_base_identity
from inference.chatterbox import T3_CONFIG_FILE, load_chatterbox
from inference.checkpoints import CheckpointError
from inference.models.t3 import T3Config
from inference.settings import add_config_flags, flag_overrides, load_config
from training.transcribe import resolve_model

from .config import EvalConfig, StreamSettings
from .latency import SAMPLE_RATE, stream_sample
from .report import compare, read_run_info, write_report, write_run_info
from .results import SampleResult, append_result, read_results
from .sentences import Sentence, load_sentences
from .similarity import SelfSimilarity, SpeakerSimilarity
from .wer import Asr, check_asr_language, score

log = logging.getLogger("evaluation")

PRESETS = ("tiny", "tiny-multilingual")
RUNS_DIR = Path("evaluation_runs")  # where runs without an --output-dir go
PRESET_MAX_TOKENS = 50  # the presets' random T3 never emits a stop token: 2 s per sample is enough to test
HELDOUT_FILE = "heldout_clips.json"  # written by training.lora into the merged folder
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
MIN_REFERENCE_SECONDS = 2.0


class EvaluationError(RuntimeError):
    """The evaluation cannot start; the message says what to fix."""


# ------------------------------------------------------------------------------------------ checks

def resolve_model_path(value: str, what: str, cfg: EvalConfig) -> str:
    """A preset name, an existing model or LoRA adapter folder, or a repo id; 'latest' is the newest training
    output (a run's merged/ or adapter/ folder)."""
    if value in PRESETS:
        return value
    if value == "latest":
        root = Path(cfg.checkpoints_dir)
        outputs = sorted([*root.glob("*/merged"), *root.glob("*/adapter")], key=lambda p: p.stat().st_mtime)
        if not outputs:
            raise EvaluationError(f"{what}='latest' but {cfg.checkpoints_dir}/ holds no training output: run "
                                  "`python -m training.lora` first, or give the merged or adapter folder's path")
        return str(outputs[-1])
    path = Path(value).expanduser()
    if path.is_dir() and is_adapter(path):
        try:
            adapter_base(path)
        except ValueError as e:
            raise EvaluationError(f"{what}={value!r}: {e}") from None
        return str(path)
    if path.is_dir():
        if not any(path.glob("t3_*.safetensors")):
            inside = [p for p in (path / "merged", path / "adapter") if p.is_dir()]
            if inside:
                raise EvaluationError(f"{what}={value!r} is a training run folder: give {inside[0]}")
            raise EvaluationError(f"{what}={value!r} is a folder without a T3 checkpoint (t3_*.safetensors) or a "
                                  "LoRA adapter: give a training output (<run>/adapter or <run>/merged), a "
                                  "checkpoint (<run>/step-N) or an official Chatterbox folder")
        return str(path)
    looks_like_repo = value.count("/") == 1 and not value.startswith((".", "/", "~"))
    if looks_like_repo and not path.exists():
        return value  # a hub repo id; loading it needs the network (or a filled cache)
    raise EvaluationError(f"{what}={value!r} does not exist")


def resolve_reference(cfg: EvalConfig, tuned: str | None) -> tuple[list[Path], str]:
    """The speaker's reference clip(s) and where they came from: the configured ones, else a clip held out of
    the tuned model's training, else the first recording in `audio_dir` (the training speaker, maybe trained on)."""
    if cfg.reference_audio:
        return [Path(p).expanduser() for p in cfg.reference_audio], "reference_audio"
    if tuned and (Path(tuned) / HELDOUT_FILE).is_file():
        clips = json.loads((Path(tuned) / HELDOUT_FILE).read_text()).get("heldout_clips", [])
        clips = [Path(c) for c in clips if Path(c).is_file()]
        if clips:
            return clips[:1], f"held out of the tuned model's training ({HELDOUT_FILE})"
    found = sorted(p for p in Path(cfg.audio_dir).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not found:
        raise EvaluationError("no reference voice: set reference_audio (or --reference-audio clip.wav), or put the "
                              f"speaker's recordings in audio_dir={cfg.audio_dir!r}")
    return found[:1], f"first recording in {cfg.audio_dir} (not known to be held out of training)"


def check_reference(paths: list[Path]) -> None:
    for path in paths:
        if not path.is_file():
            raise EvaluationError(f"reference clip {path} does not exist")
        try:
            wav = load_audio(path, 16_000)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
            raise EvaluationError(f"reference clip {path} cannot be read: {e}") from None
        if len(wav) < MIN_REFERENCE_SECONDS * 16_000 or not np.abs(wav).max() > 1e-4:
            raise EvaluationError(f"reference clip {path} is silent or shorter than {MIN_REFERENCE_SECONDS:g} s")


def config_for_resume(cfg: EvalConfig, models: dict[str, str]) -> dict:
    """What must match for a run folder to be resumed: the configuration (wherever the folder is) and the models
    it resolved to ('latest' may point elsewhere by now)."""
    d = asdict(cfg)
    d.pop("output_dir")
    return json.loads(json.dumps({**d, "resolved_models": models}))


def find_run_dir(cfg: EvalConfig, resume: bool) -> Path:
    """`output_dir` when given; else a new dated folder under RUNS_DIR, or with `resume` the newest one there."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    if not resume:
        return RUNS_DIR / time.strftime("eval-%Y%m%d-%H%M%S")
    runs = [d for d in RUNS_DIR.iterdir() if (d / "run_info.json").is_file()] if RUNS_DIR.is_dir() else []
    if not runs:
        raise EvaluationError(f"--resume: no evaluation run in {RUNS_DIR}/; name it with --output-dir")
    return max(runs, key=lambda d: (d / "run_info.json").stat().st_mtime)


def environment(device: str) -> dict:
    import transformers

    from inference.hardware import hardware

    return {"hardware": hardware(device), "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "transformers": transformers.__version__, "device": device}


# ------------------------------------------------------------------------------------------ recipe

def evaluate(cfg: EvalConfig, resume: bool = False) -> Path:
    """The whole recipe (see the module docstring); returns the run folder."""
    # --- 1. everything that can be wrong is found before any sample is generated
    models = {"base": resolve_model_path(cfg.base_model_path, "base_model_path", cfg)}
    if cfg.tuned_model_path:
        models["tuned"] = resolve_model_path(cfg.tuned_model_path, "tuned_model_path", cfg)
    try:
        sentences = load_sentences(cfg.sentences, cfg.language, cfg.max_sentences or None)
    except (ValueError, FileNotFoundError) as e:
        raise EvaluationError(f"sentences: {e}") from None
    references, reference_origin = resolve_reference(cfg, models.get("tuned"))
    check_reference(references)
    asr_cfg = dataclasses.replace(cfg.asr, language=cfg.language)
    try:
        resolve_model(asr_cfg)
        check_asr_language(asr_cfg)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise EvaluationError(f"ASR model: {e}") from None
    run_dir = find_run_dir(cfg, resume)
    resume_key = config_for_resume(cfg, models)
    saved = read_run_info(run_dir) if (run_dir / "run_info.json").is_file() else None
    if saved is not None and saved.get("resume_key") != resume_key:
        raise EvaluationError(f"{run_dir} holds a run with another configuration or other models; give another "
                              "--output-dir (or none, for a new dated run) to start a fresh one")
    run_dir.mkdir(parents=True, exist_ok=True)
    asr = Asr(asr_cfg)
    verifier = SpeakerSimilarity(cfg.similarity)
    reference_embedding = mean_embedding([verifier.reference_embedding(p) for p in references])

    synthetic = [name for name, path in models.items() if is_synthetic(path)]
    info = {
        "config": asdict(cfg), "resume_key": resume_key, "environment": environment(cfg.device),
        "models": {name: describe_model(path, name in synthetic) for name, path in models.items()},
        "synthetic": bool(synthetic), "asr_model": f"{asr_cfg.backend}: {asr_cfg.model}",
        "similarity_model": verifier.name, "similarity_note": similarity_note(verifier.name),
        "reference_audio": [str(p) for p in references],
        "reference_origin": reference_origin, "sentences": len(sentences),
    }
    write_run_info(run_dir, info)
    done = {row.key for row in read_results(run_dir) if row.ok}
    print(f"evaluation: {len(sentences)} sentences x {cfg.samples_per_sentence} samples, models "
          f"{', '.join(f'{k}={v}' for k, v in models.items())}; reference {references[0]} ({reference_origin}); "
          f"{len(done)} samples already done in {run_dir}")
    if synthetic:
        print(f"NOTE: {' and '.join(synthetic)}: SYNTHETIC weights (the tiny preset or a fine-tune of it) make no "
              "intelligible speech; the scores test the harness, not a voice")

    # --- 2. generate and score, model by model (one model in memory at a time)
    for name, path in models.items():
        todo = [(i, s, k) for i, s in enumerate(sentences) for k in range(cfg.samples_per_sentence)
                if (name, s.id, k) not in done]
        if not todo:
            continue
        model = load_model(path, cfg)
        model.setup_model(str(references[0]), exaggeration=cfg.stream.exaggeration)
        stream = cfg.stream
        if name in synthetic and stream.max_new_tokens > PRESET_MAX_TOKENS:
            stream = dataclasses.replace(stream, max_new_tokens=PRESET_MAX_TOKENS)
            print(f"{name}: synthetic weights never stop by themselves; {PRESET_MAX_TOKENS} speech tokens per sample")
        own = SelfSimilarity(model.ve)
        own_reference = mean_embedding([own.reference_embedding(p) for p in references])
        (run_dir / "samples" / name).mkdir(parents=True, exist_ok=True)
        for i, sentence, k in tqdm(todo, desc=f"{name} samples", unit="sample"):
            row = run_sample(model, name, i, sentence, k, cfg, stream, run_dir, asr, verifier,
                             reference_embedding, own, own_reference)
            append_result(run_dir, row)
        del model
        gc.collect()

    # --- 3. statistics and report
    rows = read_results(run_dir)
    md, html = write_report(run_dir, rows, info)
    failed = sum(not r.ok for r in rows)
    print(f"{len(rows)} samples ({failed} failed); report: {md} and {html}")
    if failed:
        print(f"to retry the failed samples: python -m evaluation --output-dir {run_dir} (same settings)")
    return run_dir


def run_sample(model, name: str, index: int, sentence: Sentence, k: int, cfg: EvalConfig, stream: StreamSettings,
               run_dir: Path, asr, verifier, reference_embedding, own, own_reference) -> SampleResult:
    """One streamed, saved and scored sample; any failure is recorded in the row, never raised."""
    seed = cfg.seed + 1000 * index + k
    row = SampleResult(model=name, sentence_id=sentence.id, sample=k, seed=seed, language=cfg.language,
                       text=sentence.text)
    try:
        language = cfg.language if model.t3.cfg.is_multilingual else None
        audio, timing = stream_sample(model, sentence.text, language, seed, stream)
        for key, value in asdict(timing).items():
            setattr(row, key, value)
        if len(audio) == 0:
            raise ValueError("empty audio: the model produced no speech tokens")
        if not np.isfinite(audio).all():
            raise ValueError("non-finite audio (NaN or inf samples)")
        wav = Path("samples") / name / f"{safe(sentence.id)}_s{k}.wav"
        sf.write(run_dir / wav, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        row.wav = str(wav)
        row.hypothesis = asr.transcribe(audio, SAMPLE_RATE)
        scores = score(sentence.text, row.hypothesis, cfg.language)
        row.wer, row.cer = scores["wer"], scores["cer"]
        row.reference_norm, row.hypothesis_norm = scores["reference_norm"], scores["hypothesis_norm"]
        row.similarity = verifier.similarity(reference_embedding, audio, SAMPLE_RATE)
        try:  # secondary: its failure does not fail the sample
            row.similarity_self = own.similarity(own_reference, audio, SAMPLE_RATE)
        except ValueError as e:
            log.info("%s %s sample %d: no self-similarity (%s)", name, sentence.id, k, e)
    except Exception as e:  # noqa: BLE001 - recorded with the sample; the run goes on
        row.error = f"{type(e).__name__}: {e}"
        log.warning("%s %s sample %d failed: %s", name, sentence.id, k, row.error)
    return row


def load_model(path: str, cfg: EvalConfig):

    multilingual = cfg.multilingual or path == "tiny-multilingual"
    return load_chatterbox(path, multilingual, cfg.device)


def is_synthetic(path: str) -> bool:
    """A preset, or a folder made from one (e.g. a LoRA fine-tune of the tiny preset): its T3 has the preset's
    toy configuration, written beside the weights as t3_config.json."""
    if path in PRESETS:
        return True
    if is_adapter(path):
        return on_synthetic_base(read_base_identity(path) or {})
    sidecar = Path(path) / T3_CONFIG_FILE
    if not sidecar.is_file():
        return False
    saved = json.loads(sidecar.read_text())
    return any(saved == json.loads(json.dumps(asdict(T3Config.tiny(m)))) for m in (False, True))


def describe_model(path: str, synthetic: bool) -> str:
    if synthetic:
        return (f"{path}: SYNTHETIC random weights (the tiny preset{'' if path in PRESETS else ', fine-tuned'}), "
                "produces no intelligible speech; its scores test the harness, not a voice")
    return path


def similarity_note(name: str) -> str:
    if name == "resemblyzer-ge2e":
        return ("Speaker similarity uses GE2E (resemblyzer), the offline default: the only pretrained speaker "
                "encoder obtainable offline. It is the same family as the voice encoder Chatterbox conditions "
                "on, so it is not fully independent of the model; the field's standard is WavLM-large + "
                "ECAPA-TDNN (pass a WavLM verification model with --similarity.model wavlm:PATH). The "
                "'self' similarity uses the model's own voice encoder and is biased upwards.")
    return "The 'self' similarity uses the model's own voice encoder and is biased upwards (it is conditioned on)."


def mean_embedding(embeddings: list[np.ndarray]) -> np.ndarray:
    mean = np.mean(np.stack(embeddings), axis=0)
    return mean / np.linalg.norm(mean)


def safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in name)


# ------------------------------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", help="config file (default: ./config.toml, else the project's)")
    p.add_argument("--resume", action="store_true",
                   help=f"continue the newest run in {RUNS_DIR}/ (or --output-dir): finished samples are kept")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                   help="report two finished run folders against each other, generating nothing")
    add_config_flags(p, EvalConfig, "evaluation")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.compare:
            a, b = (Path(p) for p in args.compare)
            out = Path(getattr(args, "cfg:output_dir") or a.resolve().parent / f"{a.resolve().name}-vs-{b.resolve().name}")
            md, html = compare(a, b, out)
            print(f"comparison: {md} and {html}")
            return 0
        cfg = load_config(EvalConfig, "evaluation", args.config, flag_overrides(args))
        evaluate(cfg, resume=args.resume)
    except (EvaluationError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
