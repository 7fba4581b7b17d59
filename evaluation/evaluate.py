"""Is the fine-tuned voice better than the base model, and is it still fast? Or any setup against another: two sides
(a model of any family plus its precisions and stream settings), same sentences, same seeds.

    python -m evaluation                                              # [evaluation] of config.toml
    python -m evaluation --tuned-model-path checkpoints_dir/<run>/merged
    python -m evaluation --base-model-path tiny --tuned-model-path tiny-turbo         # the original vs Turbo
    python -m evaluation --base-model-path M --tuned-model-path M --b.t3-dtype int8   # float32 vs int8
    python -m evaluation --tuned-model-path latest --samples-per-sentence 3 --output-dir evaluation_runs/mine
    python -m evaluation --resume                                     # continue the newest (interrupted) run
    python -m evaluation --compare evaluation_runs/a evaluation_runs/b   # two finished runs, nothing regenerated

Recipe:
  1. check everything before any work: the config, both model paths, the sentences, the reference clip(s), the
     ASR and speaker-verification models, and that the output folder is new or holds a run to continue; then
     load both models (a broken checkpoint fails here, not after the other model's samples);
  2. one untimed warm-up stream per model, then for each (sentence, sample) not already done, the two models
     taking turns to go first (base first on even sentences, tuned first on odd ones, so neither always gets the
     warmer caches): stream it through `generate_stream` (time to first audio, per-chunk compute, real-time
     factor, underruns of a real-time player, the machine's load), write the WAV, transcribe it with Whisper
     (WER, CER after TTS-benchmark normalisation), score speaker similarity against the reference with an
     independent verification model (plus, secondary and biased, with the model's own voice encoder), and
     append one row to results.jsonl;
  3. summary statistics, base-vs-tuned deltas with paired significance, plots and report.md / report.html.

Each run gets its own folder: `--output-dir D` (report.md lands in D), else evaluation_runs/eval-<date>-<time>/.
A failed sample (exception, empty or non-finite audio) is recorded with its error and the run goes on; the exit
status is then 1 (0: every sample scored, 2: the run could not start). The same `--output-dir` again, or
`--resume` for the newest dated run, continues a run with the settings it was started with: finished samples
are skipped, failed ones retried; settings given now that differ from the run's are listed and refused. A folder
that is neither new, empty nor an evaluation run (a training run, say) is refused, and so is a broken JSON file of
a run or model folder (the message names it); a last result row cut short by a kill is dropped and redone. Both
models speak with the voice of the first reference clip.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from inference.audio import check_reference, load_audio
from inference.adapters import (ADAPTER_CONFIG, BASE_FILE, HELDOUT_FILE, RUN_CONFIG, adapter_base, is_adapter,
                                 on_synthetic_base)
from inference.asr import Asr, TranscribeConfig, base_language, check_language, resolve_model, score
from inference.chatterbox import T3_CONFIG_FILE, load_chatterbox
from inference.checkpoints import CheckpointError
from inference.families import FAMILIES, PRESETS, Family
from inference.loading import family_for, is_repo_id
from inference.settings import command_overrides, command_parser, config_from_dict, flatten, load_config
from inference.transcripts import TranscriptError, side_transcript

from .config import EvalConfig, Setup, StreamSettings
from .jsonfiles import json_object, read_json_object
from .latency import SAMPLE_RATE, stream_sample
from .quality import DnsMos
from .report import RUN_INFO_FILE, compare, read_run_info, write_report, write_run_info
from .results import SampleResult, append_result, read_results
from .sentences import Sentence, load_sentences
from .similarity import SelfSimilarity, SpeakerSimilarity, cosine
from .stats import ALPHA, min_sentences, sentences_needed

log = logging.getLogger("evaluation")

SETUP_OF = {"base": lambda cfg: cfg.a, "tuned": lambda cfg: cfg.b}  # the settings of each model path's side
RUNS_DIR = Path(EvalConfig.runs_dir)  # runs_dir's default, where runs without an --output-dir go
PRESET_MAX_TOKENS = 50  # the presets' random T3 never emits a stop token: 2 s per sample is enough to test
PRESET_MAX_SENTENCES = 6  # synthetic weights test the harness: the fewest sentences a paired test can decide on
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
WHERE_KEYS = ("output_dir", "runs_dir")  # where a run's folder is, not what the run is: free to differ on resume
MODEL_FILES = {  # JSON files of a model folder that evaluation (or its loader) reads, and what it reads of them
    BASE_FILE: json_object("BaseFile", model=str, family=str, t3_config=json_object("T3Sizes", num_layers=int)),
    ADAPTER_CONFIG: json_object("AdapterConfig", base_model_name_or_path=str | None),
    RUN_CONFIG: json_object("TrainingConfig", lora=dict),
    HELDOUT_FILE: json_object("Heldout", heldout_clips=list[str], originals=dict[str, str]),
    T3_CONFIG_FILE: dict,
}


class EvaluationError(RuntimeError):
    """The evaluation cannot start; the message says what to fix."""


@dataclass
class Preloaded:
    """Models `evaluate` takes instead of loading its own, as `training.lora.train(model=...)` takes a loaded
    model: a notebook or a test session evaluating many times loads each once. What is missing is loaded.

    `tts` maps a resolved model path ('tiny', a folder) to the model `load_model` would give for it; `evaluate`
    prepares its voice (`prepare_conditionals`) for the reference clip. `asr` and `similarity` must have been built
    with the run's settings (`Asr(cfg.asr, language)`, `SpeakerSimilarity(cfg.similarity)`), or the run is refused.
    """

    tts: dict[str, Any] = field(default_factory=dict)
    asr: Asr | None = None
    similarity: SpeakerSimilarity | None = None
    quality: DnsMos | None = None


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
    if path.is_dir():
        check_model_files(path)
    if path.is_dir() and is_adapter(path):
        base = (model_file(path, BASE_FILE) or {}).get("model")
        if what == "base_model_path":
            raise EvaluationError(f"{what}={value!r} is a LoRA adapter, i.e. a tuned model: give it as "
                                  f"tuned_model_path and its base ({base or 'the model it was trained from'}) as "
                                  "base_model_path")
        try:
            adapter_base(path)
        except ValueError:
            raise EvaluationError(f"{what}={value!r} is a LoRA adapter that does not record its base model, so it "
                                  "cannot be loaded alone: merge it (python -m training.merge --checkpoint "
                                  f"{path} --base BASE --out DIR) and give DIR") from None
        return str(path)
    if path.is_dir():
        if not any(path.glob("t3_*.safetensors")):
            steps = sorted(path.glob("step-*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else -1)
            inside = [p for p in (path / "merged", path / "adapter") if p.is_dir()] + steps[-1:]
            if inside:
                raise EvaluationError(f"{what}={value!r} is a training run folder: give {inside[0]}"
                                      + (" (its newest checkpoint; the run has no final adapter yet)"
                                         if inside[0] in steps else ""))
            raise EvaluationError(f"{what}={value!r} is a folder without a T3 checkpoint (t3_*.safetensors) or a "
                                  "LoRA adapter: give a training output (<run>/adapter or <run>/merged), a "
                                  "checkpoint (<run>/step-N) or an official Chatterbox folder")
        return str(path)
    if is_repo_id(value):
        return value  # a hub repo id; loading it needs the network (or a filled cache)
    raise EvaluationError(f"{what}={value!r} does not exist")


def trained_from(tuned: str | None) -> str:
    """base_model_path left empty: the model a training output was trained from (its chatterbox_base.json), so
    `--tuned-model-path latest` after fine-tuning Turbo compares with Turbo; 'tiny' when there is none."""
    if tuned is None or not Path(tuned).is_dir():
        return "tiny"
    base = (model_file(tuned, BASE_FILE) or {}).get("model")
    if not base:
        raise EvaluationError(f"{tuned} does not record the model it was trained from: give base_model_path")
    print(f"base model: {base} (what {tuned} was trained from)")
    return base


def resolve_reference(cfg: EvalConfig, tuned: str | None) -> tuple[list[Path], str]:
    """The speaker's reference clip(s) and where they came from: the configured ones, else a clip held out of
    the tuned model's training, else the first recording in `audio_dir` (the training speaker, maybe trained on)."""
    if cfg.reference_audio:
        return [Path(p).expanduser() for p in cfg.reference_audio], "reference_audio"
    if tuned and (Path(tuned) / HELDOUT_FILE).is_file():
        clips = [c for c in heldout_clips(tuned) if c.is_file()]
        if clips:
            return clips[:1], f"held out of the tuned model's training ({HELDOUT_FILE})"
    found = sorted(p for p in Path(cfg.audio_dir).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not found:
        raise EvaluationError("no reference voice: set reference_audio (or --reference-audio clip.wav), or put the "
                              f"speaker's recordings in audio_dir={cfg.audio_dir!r}")
    return found[:1], f"first recording in {cfg.audio_dir} (not known to be held out of training)"


def heldout_clips(tuned: str) -> list[Path]:
    """The clips held out of the tuned model's training, as training read them; a corrected copy that went with
    the training cache (`rm -r checkpoints_dir/.cache`) is replaced by the user's recording it was made from."""
    originals = heldout_originals(tuned)
    clips = (model_file(tuned, HELDOUT_FILE) or {}).get("heldout_clips", [])
    return [Path(c) if Path(c).is_file() else originals.get(Path(c), Path(c)) for c in clips]


def heldout_originals(tuned: str | None) -> dict[Path, Path]:
    """{held-out clip: the user's recording} for clips training read from a corrected copy in its cache (a DC
    offset removed): the transcript lies beside the recording, and the recording is the clip, not another one."""
    if not tuned or not Path(tuned).is_dir():
        return {}
    originals = (model_file(tuned, HELDOUT_FILE) or {}).get("originals", {})
    return {Path(clip): Path(recording) for clip, recording in originals.items()}


def model_file(folder: str | Path, name: str) -> dict | None:
    """One JSON file of MODEL_FILES in a model folder, checked before anything relies on it; None when absent."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    fix = f"the model folder {folder} is damaged: export it again (training.lora writes it), or give another model"
    return read_json_object(path, MODEL_FILES[name], fix)


def check_model_files(folder: str | Path) -> None:
    """Refuse a broken JSON file of a model folder now, before any work: the loader reads some of them only once
    the other model is loaded."""
    for name in MODEL_FILES:
        model_file(folder, name)


def check_references(paths: list[Path]) -> None:
    """Each clip passes the rule every voice reference passes (inference.audio.check_reference), before any model
    loads."""
    for path in paths:
        if not path.is_file():
            raise EvaluationError(f"reference clip {path} does not exist")
        try:
            check_reference(load_audio(path, 16_000), 16_000, f"reference clip {path}")
        except Exception as e:  # noqa: BLE001 - unreadable or unusable: the message names the file and why
            raise EvaluationError(str(e) if str(path) in str(e) else f"reference clip {path}: {e}") from None


def config_for_resume(cfg: EvalConfig, models: dict[str, str]) -> dict:
    """What identifies a run: the configuration (wherever the folder is) and the models it resolved to ('latest'
    may point elsewhere by now)."""
    d = asdict(cfg)
    for where in WHERE_KEYS:
        d.pop(where)
    return json.loads(json.dumps({**d, "resolved_models": models}))


def find_run_dir(cfg: EvalConfig, resume: bool) -> Path:
    """`output_dir` when given; else a new dated folder under `runs_dir`, or with `resume` the newest one there."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    runs_dir = Path(cfg.runs_dir)
    if not resume:
        return runs_dir / time.strftime("eval-%Y%m%d-%H%M%S")
    runs = [d for d in runs_dir.iterdir() if (d / RUN_INFO_FILE).is_file()] if runs_dir.is_dir() else []
    if not runs:
        raise EvaluationError(f"--resume: no evaluation run in {runs_dir}/; name it with --output-dir")
    return max(runs, key=lambda d: (d / RUN_INFO_FILE).stat().st_mtime)


def check_run_dir(run_dir: Path) -> None:
    """A run starts in a new or empty folder, or continues the evaluation run a folder holds (its run_info.json).
    Anything else, such as a training run given as --output-dir, is refused rather than filled with samples."""
    if not run_dir.exists() or (run_dir / RUN_INFO_FILE).is_file():
        return
    if not run_dir.is_dir():
        raise EvaluationError(f"output_dir {run_dir} is a file: give a new or empty folder")
    found = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    if not found:
        return
    trained = any(n in ("adapter", "merged", ADAPTER_CONFIG) or n.startswith("step-") or n.endswith(".safetensors")
                  for n in found)
    raise EvaluationError(f"{run_dir} is not an evaluation run (it has no {RUN_INFO_FILE}) but holds "
                          f"{', '.join(found[:6])}{', ...' if len(found) > 6 else ''}"
                          f"{' (a training run or model folder?)' if trained else ''}: give --output-dir a new or "
                          "empty folder to start a run, or an evaluation run's folder to continue it")


def resume_config(run_dir: Path, saved: dict, cfg: EvalConfig, given: set[str]) -> EvalConfig:
    """The configuration a run folder was started with, which a resumed run keeps. `given` are the keys the user
    set now (flags, `key=value`, an explicit --config file); each must agree with the saved value, or the
    differing keys are listed. Keys not given come from the saved run, not from config.toml."""
    try:
        saved_cfg = config_from_dict(EvalConfig, saved["config"], (), str(run_dir / RUN_INFO_FILE))
    except (KeyError, ValueError, TypeError) as e:
        raise EvaluationError(f"{run_dir / RUN_INFO_FILE}: the run's saved configuration cannot be read ({e}); give "
                              "another --output-dir to start a new run") from None
    now, then = flatten(json.loads(json.dumps(asdict(cfg)))), flatten(json.loads(json.dumps(asdict(saved_cfg))))
    differ = sorted(k for k in given if k not in WHERE_KEYS and k in now and now[k] != then.get(k))
    if differ:
        listed = "; ".join(f"{k}: run has {then.get(k)!r}, given {now[k]!r}" for k in differ)
        raise EvaluationError(f"{run_dir} holds a run started with other settings ({listed}). To continue it, leave "
                              "those settings out (the run keeps its own); to start a new run, give another "
                              "--output-dir (or none, for a new dated run)")
    return dataclasses.replace(saved_cfg, output_dir=str(run_dir))


def environment(device: str) -> dict:
    import transformers

    from inference.hardware import hardware

    return {"hardware": hardware(device), "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "transformers": transformers.__version__, "device": device,
            "cpu_count": os.cpu_count(), "load_average_at_start": _load()}


def _load() -> float | None:
    """The 1-minute load average: latency figures mean little without it (another job on the machine slows
    every stream)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


# ------------------------------------------------------------------------------------------ recipe

def evaluate(cfg: EvalConfig, resume: bool = False, given: set[str] | None = None,
             preloaded: Preloaded | None = None) -> tuple[Path, list[SampleResult]]:
    """The whole recipe (see the module docstring); returns the run folder and its result rows. `given`: the
    configuration keys the user set explicitly (for a resumed run, see `resume_config`); None: all of them.
    `preloaded`: models to use instead of loading them (see `Preloaded`)."""
    preloaded = preloaded or Preloaded()
    # --- 1. everything that can be wrong is found before any sample is generated
    run_dir = find_run_dir(cfg, resume)
    check_run_dir(run_dir)
    saved = read_run_info(run_dir) if (run_dir / RUN_INFO_FILE).is_file() else None
    if saved is not None:
        cfg = resume_config(run_dir, saved, cfg, set(flatten(asdict(cfg))) if given is None else given)
    language = base_language(cfg.language)
    tuned = resolve_model_path(cfg.tuned_model_path, "tuned_model_path", cfg) if cfg.tuned_model_path else None
    models = {"base": resolve_model_path(cfg.base_model_path or trained_from(tuned), "base_model_path", cfg)}
    if tuned is not None:
        models["tuned"] = tuned
    if saved is not None:
        models = _saved_models(saved, models)
    families = {name: family_for(path, cfg.multilingual or path == "tiny-multilingual")  # an adapter: its base's
                for name, path in models.items()}
    english = [f"{name} ({families[name].name})" for name in models if not families[name].needs_language]
    if language != "en" and english:
        raise EvaluationError(f"language {language!r}: the {' and '.join(english)} model speaks English only; "
                              "evaluate another language with the multilingual model (multilingual = true, or "
                              "tiny-multilingual)")
    recorded = (model_file(models["tuned"], BASE_FILE) or {}) if "tuned" in models and Path(models["tuned"]).is_dir() \
        else {}
    if recorded.get("family") and recorded["family"] != families["base"].name:
        print(f"NOTE: the tuned model is a fine-tune of the {recorded['family']} model ({recorded.get('model')}), "
              f"side A is the {families['base'].name} model: this compares families, not the fine-tune alone")
    labels = side_labels(cfg, models)
    setups = {labels[name]: (path, SETUP_OF[name](cfg)) for name, path in models.items()}
    for name, path in models.items():  # a setting the family does not use (cfg_weight on Turbo): refused now
        try:
            families[name].check_settings(**SETUP_OF[name](cfg).stream(cfg.stream).generate_kwargs())
        except ValueError as e:
            raise EvaluationError(f"{labels[name]} ({path}): {e}") from None
    synthetic = [labels[name] for name, path in models.items() if is_synthetic(path)]
    limit = cfg.max_sentences or None
    if len(synthetic) == len(models) and (limit is None or limit > PRESET_MAX_SENTENCES):
        limit = PRESET_MAX_SENTENCES
        print(f"synthetic weights only: {PRESET_MAX_SENTENCES} sentences (enough to test the harness)")
    try:
        sentences = load_sentences(cfg.sentences, language, limit)
    except (ValueError, FileNotFoundError) as e:
        raise EvaluationError(f"sentences: {e}") from None
    if len(sentences) < min_sentences():
        print(f"WARNING: {len(sentences)} sentences: no difference between the models can reach p < {ALPHA} "
              f"with fewer than {min_sentences()}; {sentences_needed(0.5)} detect a difference of half the "
              "spread of per-sentence differences")
    references, reference_origin = resolve_reference(cfg, models.get("tuned"))
    check_references(references)
    asr_cfg = dataclasses.replace(cfg.asr, language=language)
    try:
        resolve_model(asr_cfg)
        check_language(asr_cfg, setting="--asr.model / [evaluation.asr] model")
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise EvaluationError(f"ASR model: {e}") from None
    done = {row.key for row in read_results(run_dir) if row.ok}
    sides = list(setups)
    todo = [(i, s, k, name) for i, s in enumerate(sentences) for k in range(cfg.samples_per_sentence)
            for name in (sides if i % 2 == 0 else sides[::-1]) if (name, s.id, k) not in done]
    loaded = load_setups(setups, cfg, preloaded) if todo else {}
    run_dir.mkdir(parents=True, exist_ok=True)
    asr, verifier, quality = load_scorers(asr_cfg, cfg, preloaded)
    reference_embedding = mean_embedding([verifier.reference_embedding(p) for p in references])
    originals = heldout_originals(models.get("tuned"))
    speaker = speaker_recordings(cfg, references, reference_origin, originals)

    streams = {label: stream_settings(setup.stream(cfg.stream), label in synthetic)
               for label, (_, setup) in setups.items()}
    used = {label: settings_used(path, setup, families[name], streams[label], loaded.get(label))
            for (name, path), (label, (_, setup)) in zip(models.items(), setups.items())}
    if saved is not None and not loaded:  # nothing left to generate: the settings the samples were made with
        used = saved.get("stream_used") or used
    info = {
        "config": asdict(cfg), "resume_key": config_for_resume(cfg, models), "environment": environment(cfg.device),
        "sides": sides,
        "models": {labels[name]: describe_model(path, labels[name] in synthetic) for name, path in models.items()},
        "stream_used": used, "synthetic": bool(synthetic), "asr_model": f"{asr_cfg.backend}: {asr_cfg.model}",
        "similarity_model": verifier.name, "similarity_note": similarity_note(verifier.name),
        "quality_model": quality.name,
        "reference_audio": [str(p) for p in references],
        "reference_origin": reference_origin, "sentences": len(sentences),
        "sentences_used": [s.id for s in sentences],
        "similarity_ceiling": similarity_ceiling(verifier, references, speaker),
        "asr_floor": asr_floor(asr, list(dict.fromkeys([*references, *speaker])), language, originals),
    }
    write_run_info(run_dir, info)
    print(f"evaluation: {len(sentences)} sentences x {cfg.samples_per_sentence} samples, "
          f"{' vs '.join(f'{label} ({path})' for label, (path, _) in setups.items())}; reference {references[0]} "
          f"({reference_origin}); {len(done)} samples already done in {run_dir}")
    if synthetic:
        print(f"NOTE: {' and '.join(synthetic)}: SYNTHETIC weights (a preset or a fine-tune of one) make no "
              f"intelligible speech and never stop by themselves: "
              f"{min(cfg.stream.max_new_tokens, PRESET_MAX_TOKENS)} speech tokens per sample; "
              "the scores test the harness, not a voice")

    # --- 2. warm up, then generate and score, the two setups taking turns to go first
    for name, model in loaded.items():  # (setup_model's own warm-up is left out: the warm-up stream below is real)
        model.prepare_conditionals(str(references[0]), exaggeration=streams[name].exaggeration)
        (run_dir / "samples" / safe(name)).mkdir(parents=True, exist_ok=True)
    own = {name: SelfSimilarity(model.ve) for name, model in loaded.items()}
    own_reference = {name: mean_embedding([own[name].reference_embedding(p) for p in references]) for name in loaded}
    for name, model in loaded.items():  # the first stream of a process pays for allocations and caches
        print(f"{name}: one untimed warm-up stream")
        stream_sample(model, sentences[0].text, language if model.t3.cfg.is_multilingual else None, cfg.seed,
                      streams[name])
    for i, sentence, k, name in tqdm(todo, desc="samples", unit="sample"):
        row = run_sample(loaded[name], name, i, sentence, k, cfg, streams[name], run_dir, asr, verifier, quality,
                         reference_embedding, own[name], own_reference[name], language)
        append_result(run_dir, row)
    del loaded
    gc.collect()

    # --- 3. statistics and report
    rows = read_results(run_dir)
    info["environment"]["load_average_at_end"] = _load()
    write_run_info(run_dir, info)
    md, html = write_report(run_dir, rows, info)
    failed = sum(not r.ok for r in rows)
    print(f"{len(rows)} samples ({failed} failed); report: {md} and {html}")
    if failed:
        print(f"to retry the failed samples: python -m evaluation --output-dir {run_dir}")
    return run_dir, rows


def _saved_models(saved: dict, models: dict[str, str]) -> dict[str, str]:
    """A resumed run keeps the models it resolved to when it started ('latest' may point elsewhere now)."""
    kept = (saved.get("resume_key") or {}).get("resolved_models") or models
    for name, path in kept.items():
        if path not in PRESETS and not Path(path).exists() and Path(path).is_absolute():
            raise EvaluationError(f"the run's {name} model {path} no longer exists")
        if Path(path).is_dir():
            check_model_files(path)
    return dict(kept)


def speaker_recordings(cfg: EvalConfig, references: list[Path], origin: str,
                       originals: dict[Path, Path] | None = None, limit: int = 5) -> list[Path]:
    """Up to `limit` other recordings of the speaker: the other reference clips, else (when the reference came
    from the training speaker's folder) other files of `audio_dir`. They put the scores on a scale. `originals`
    (`heldout_originals`): the reference may be a corrected copy of one of those files, which is then left out."""
    if len(references) > 1:
        return references
    if origin == "reference_audio":
        return []
    itself = {p.resolve() for p in (references[0], (originals or {}).get(references[0], references[0]))}
    found = sorted(p for p in Path(cfg.audio_dir).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    return [p for p in found if p.resolve() not in itself][:limit]


def similarity_ceiling(verifier, references: list[Path], others: list[Path]) -> dict | None:
    """The same-speaker ceiling: how similar the speaker's own recordings are to the reference (or, with several
    references, to each other). A perfect clone scores about this, not 100."""
    pairs = ([(a, b) for i, a in enumerate(references) for b in references[i + 1:]] if len(references) > 1 else
             [(references[0], p) for p in others])
    scores = []
    for a, b in pairs:
        try:
            scores.append(cosine(verifier.reference_embedding(a), verifier.reference_embedding(b)))
        except Exception as e:  # noqa: BLE001 - an unusable clip only narrows the ceiling's basis
            log.info("similarity ceiling: %s vs %s skipped (%s)", a, b, e)
    return {"mean": float(np.mean(scores)), "n": len(scores)} if scores else None


def asr_floor(asr, recordings: list[Path], language: str, originals: dict[Path, Path] | None = None) -> dict | None:
    """The ASR's own WER on the speaker's real recordings that have a transcript beside them (clip.txt or
    clip.lab, read as training reads them): the floor under any model's WER. None when no recording has one.
    A held-out clip read from a corrected copy takes the transcript beside the user's recording (`originals`)."""
    scored = []
    for path in recordings:
        try:
            text = side_transcript((originals or {}).get(path, path))
        except TranscriptError as e:  # as in training: the clip is left out, the file named with what to do
            log.warning("ASR floor: %s skipped (%s)", path, e)
            continue
        if text is None:
            continue
        try:
            wav = load_audio(path, 16_000)
            scored.append(score(text, asr.transcribe(wav, 16_000), language)["wer"])
        except Exception as e:  # noqa: BLE001 - a clip that cannot be scored is left out of the floor
            log.info("ASR floor: %s skipped (%s)", path, e)
    return {"wer": float(np.mean(scored)), "n": len(scored)} if scored else None


def load_scorers(asr_cfg: TranscribeConfig, cfg: EvalConfig,
                 preloaded: Preloaded) -> tuple[Asr, SpeakerSimilarity, DnsMos]:
    """Whisper for `asr_cfg` (the run's ASR settings and language), the speaker-verification model and DNSMOS:
    the preloaded ones where given (refused when built with other settings), else loaded now."""
    for model, wanted, what in ((preloaded.asr, asr_cfg, "asr"), (preloaded.similarity, cfg.similarity, "similarity")):
        if model is not None and model.config != wanted:
            raise ValueError(f"the preloaded {what} model was built for {asdict(model.config)}, not the run's "
                             f"{asdict(wanted)}")
    return (preloaded.asr or Asr(asr_cfg), preloaded.similarity or SpeakerSimilarity(cfg.similarity),
            preloaded.quality or DnsMos())


def stream_settings(stream: StreamSettings, synthetic: bool) -> StreamSettings:
    """The settings a model's samples really use: synthetic weights never emit a stop token, so they are capped
    at PRESET_MAX_TOKENS (the report shows these, not the configured ones)."""
    if synthetic and stream.max_new_tokens > PRESET_MAX_TOKENS:
        return dataclasses.replace(stream, max_new_tokens=PRESET_MAX_TOKENS)
    return stream


def load_checked(name: str, path: str, cfg: EvalConfig, setup: Setup):
    """Load one model completely before anything is generated: a broken checkpoint fails here, in seconds, not
    after the other model's samples. Both models stay loaded, so their samples can take turns."""
    try:
        return load_model(path, cfg, setup)
    except Exception as e:  # noqa: BLE001 - any loading failure is reported the same way, with its reason
        raise EvaluationError(f"{name}: model {path} cannot be loaded: {type(e).__name__}: {e}") from None


def load_setups(setups: dict[str, tuple[str, Setup]], cfg: EvalConfig, preloaded: Preloaded) -> dict[str, Any]:
    """label -> loaded model. Two sides with the same model and precisions share one (they differ only in stream
    settings, which each call passes); a preloaded model serves a float32 side."""
    loaded, by_source = {}, {}
    for side, (label, (path, setup)) in zip("AB", setups.items()):
        key = (path, setup.t3_dtype, setup.s3gen_dtype)
        if key not in by_source:
            plain = (setup.t3_dtype, setup.s3gen_dtype) == ("float32", "float32")
            by_source[key] = (preloaded.tts.get(path) if plain else None) or \
                load_checked(f"side {side} ({label})", path, cfg, setup)
        loaded[label] = by_source[key]
    return loaded


def settings_used(path: str, setup: Setup, family: Family, stream: StreamSettings, model=None) -> dict:
    """Everything that decides a side's samples: its model, family and precisions, and every stream and sampling
    setting as the model resolves them (the family's defaults filled in); without a loaded model, what was set."""
    out = {"model": path, "family": family.name, "t3_dtype": setup.t3_dtype, "s3gen_dtype": setup.s3gen_dtype}
    if model is None:
        return {**out, **asdict(stream)}
    streaming, sampling = model.stream_settings(**stream.generate_kwargs())
    emotion = "exaggeration" not in family.unused
    resolved = {**asdict(streaming), **asdict(sampling),
                "exaggeration": model._exaggeration(stream.exaggeration) if emotion else "none (no emotion input)"}
    if resolved.get("prompt_tokens") is None:
        resolved["prompt_tokens"] = "all"
    return {**out, **resolved}


def side_labels(cfg: EvalConfig, models: dict[str, str]) -> dict[str, str]:
    """'base'/'tuned' (the two model paths) -> each side's name in the report and the samples' folders: the
    labels given, else 'base' and 'tuned' when B is a training output or the sides are alike, else the models'
    names when they differ, else the settings that differ ('t3_dtype=float32' vs 't3_dtype=int8')."""
    given = {"base": cfg.a.label, "tuned": cfg.b.label}
    if len(models) == 1:
        return {"base": given["base"] or "base"}
    auto = _auto_labels(cfg, models["base"], models["tuned"])
    labels = {name: given[name] or auto[name] for name in models}
    if labels["base"] == labels["tuned"]:
        raise EvaluationError(f"both sides are labelled {labels['base']!r}: give them different labels "
                              "(--a.label, --b.label)")
    return labels


def _auto_labels(cfg: EvalConfig, a: str, b: str) -> dict[str, str]:
    sa, sb = ({k: v for k, v in asdict(s).items() if k != "label"} for s in (cfg.a, cfg.b))
    trained = Path(b).is_dir() and (Path(b) / BASE_FILE).is_file()
    if trained or (a == b and sa == sb):
        return {"base": "base", "tuned": "tuned"}
    if a != b:
        na, nb = _short_name(a), _short_name(b)
        return {"base": na, "tuned": nb} if na != nb else {"base": f"A-{na}", "tuned": f"B-{nb}"}
    differ = [k for k in ("t3_dtype", "s3gen_dtype", *sa) if sa[k] != sb[k]]
    differ = list(dict.fromkeys(differ))

    def shown(setup: dict) -> str:
        parts = []
        for k in differ:
            value = setup[k] if setup[k] is not None else getattr(cfg.stream, k, None)
            parts.append(f"{k}={'default' if value is None else 'all' if k == 'prompt_tokens' and value == 0 else value}")
        return ", ".join(parts)

    return {"base": shown(sa), "tuned": shown(sb)}


def _short_name(path: str) -> str:
    """A model's name for a label: a preset's, a repo's, a folder's (a run's adapter/ or merged/ with its run)."""
    if path in PRESETS:
        return path
    p = Path(path)
    name = f"{p.parent.name}-{p.name}" if p.name in ("adapter", "merged") or p.name.startswith("step-") else p.name
    return safe(name or path)


def run_sample(model, name: str, index: int, sentence: Sentence, k: int, cfg: EvalConfig, stream: StreamSettings,
               run_dir: Path, asr, verifier, quality, reference_embedding, own, own_reference,
               language: str) -> SampleResult:
    """One streamed, saved and scored sample; any failure is recorded in the row, never raised."""
    seed = cfg.seed + 1000 * index + k
    row = SampleResult(model=name, sentence_id=sentence.id, sample=k, seed=seed, language=language,
                       text=sentence.text, load_average=_load())
    try:
        audio, timing = stream_sample(model, sentence.text, language if model.t3.cfg.is_multilingual else None,
                                      seed, stream)
        for key, value in asdict(timing).items():
            setattr(row, key, value)
        if len(audio) == 0:
            raise ValueError("empty audio: the model produced no speech tokens")
        if not np.isfinite(audio).all():
            raise ValueError("non-finite audio (NaN or inf samples)")
        wav = Path("samples") / safe(name) / f"{safe(sentence.id)}_s{k}.wav"
        sf.write(run_dir / wav, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        row.wav = str(wav)
        row.hypothesis = asr.transcribe(audio, SAMPLE_RATE)
        scores = score(sentence.text, row.hypothesis, language)
        row.wer, row.cer = scores["wer"], scores["cer"]
        row.reference_norm, row.hypothesis_norm = scores["reference_norm"], scores["hypothesis_norm"]
        row.similarity = verifier.similarity(reference_embedding, audio, SAMPLE_RATE)
        try:  # secondary: its failure does not fail the sample
            row.similarity_self = own.similarity(own_reference, audio, SAMPLE_RATE)
        except ValueError as e:
            log.info("%s %s sample %d: no self-similarity (%s)", name, sentence.id, k, e)
        try:  # a score of its own: a clip DNSMOS cannot rate keeps its other scores
            for key, value in quality.score(audio, SAMPLE_RATE).items():
                setattr(row, key, value)
        except ValueError as e:
            log.info("%s %s sample %d: no quality score (%s)", name, sentence.id, k, e)
    except Exception as e:  # noqa: BLE001 - recorded with the sample; the run goes on
        row.error = f"{type(e).__name__}: {e}"
        log.warning("%s %s sample %d failed: %s", name, sentence.id, k, row.error)
    return row


def load_model(path: str, cfg: EvalConfig, setup: Setup | None = None):
    setup = setup or Setup()
    multilingual = cfg.multilingual or path == "tiny-multilingual"
    return load_chatterbox(path, multilingual, cfg.device, t3_dtype=setup.t3_dtype, s3gen_dtype=setup.s3gen_dtype)


def is_synthetic(path: str) -> bool:
    """A preset, or a folder made from one (e.g. a LoRA fine-tune of the tiny preset): its T3 has a preset's
    toy configuration, written beside the weights as t3_config.json."""
    if path in PRESETS:
        return True
    if is_adapter(path):
        return on_synthetic_base(model_file(path, BASE_FILE) or {})
    saved = model_file(path, T3_CONFIG_FILE)
    return saved is not None and any(saved == json.loads(json.dumps(asdict(f.tiny_t3))) for f in FAMILIES.values())


def describe_model(path: str, synthetic: bool) -> str:
    if synthetic:
        return (f"{path}: SYNTHETIC random weights (a preset{'' if path in PRESETS else ', fine-tuned'}), "
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
    p = command_parser("python -m evaluation", EvalConfig, "evaluation", __doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--resume", action="store_true",
                   help=f"continue the newest run in {RUNS_DIR}/ (or --output-dir) with the settings it was started "
                        "with: finished samples are kept, failed ones retried")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                   help="report two finished run folders against each other, generating nothing")
    return p


def given_keys(args: argparse.Namespace, overrides: list[str]) -> set[str]:
    """The configuration keys the user set: flags, `key=value` and, with --config, the keys of that file."""
    keys = {o.split("=", 1)[0].replace("-", "_") for o in overrides}
    if args.config and Path(args.config).is_file():
        from inference.settings import tomllib  # tomli before Python 3.11

        keys |= set(flatten(tomllib.loads(Path(args.config).read_text()).get("evaluation", {})))
    return keys


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 every sample scored; 1 some samples failed (the report is written and lists them); 2 the
    run could not start (the message says what to fix)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.compare:
            a, b = (Path(p) for p in args.compare)
            out = Path(getattr(args, "cfg:output_dir") or a.resolve().parent / f"{a.resolve().name}-vs-{b.resolve().name}")
            md, html = compare(a, b, out)
            print(f"comparison: {md} and {html}")
            return 0
        overrides = command_overrides(args)
        cfg = load_config(EvalConfig, "evaluation", args.config, overrides)
        run_dir, rows = evaluate(cfg, resume=args.resume, given=given_keys(args, overrides))
    except (EvaluationError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = sum(not r.ok for r in rows)
    if failed:
        print(f"error: {failed} of {len(rows)} samples failed (see 'Failed samples' in {run_dir / 'report.md'})",
              file=sys.stderr)
        return 1
    return 0
