"""LoRA fine-tuning of T3 on a folder of one speaker's recordings.

    python -m training.lora                                   # config.toml [training]: shipped sample, tiny preset
    python -m training.lora --model /path/to/official/weights --epochs 3 --lora.rank 32
    python -m training.lora --model ResembleAI/chatterbox-turbo       # Turbo or Nano: LoRA on GPT-2's c_attn, c_proj, c_fc
    python -m training.lora --resume                          # continue the newest run from its last checkpoint
    torchrun --nproc_per_node 2 -m training.lora --model ...          # two GPUs (--device cpu: two CPU processes)

Every key of config.toml's [training] section (and its sub-tables lora, data, transcribe, ingest) is a flag:
`--batch-size 8`, `--lora.alpha 64`, `--data.val-fraction 0.1` (or `batch_size=8`); `--help` explains each.

Features: mixed precision (bf16 or fp16 autocast, fp16 with a gradient scaler; the same code on CPU and GPU),
several processes (DDP through accelerate: each process takes every n-th micro-batch, gradients are token-weighted
so N processes train exactly like one with N times the accumulation), gradient accumulation and checkpointing,
exact resume, validation, live metrics plot, export as a PEFT adapter and/or a merged official-layout model.

What it does, top to bottom (`train`):
  1. ingest `audio_dir` (validation, long files split at pauses) and get transcripts (the user's, split over
     segments where a long file was cut; else Whisper, cached) before any model is loaded, so bad or too little
     data fails in seconds;
  2. load the model, build the cached `datasets` rows (text tokens, S3 speech tokens, speaker embedding, prompt
     tokens); wrap T3 in LoRA adapters (everything else frozen); AdamW with warmup and a cosine/linear schedule;
  3. the loop: each step is `grad_accum` micro-batches per process; every row is conditioned on ANOTHER clip of
     the speaker; loss = speech-token cross-entropy (+ text_loss_weight * text cross-entropy), padding masked and
     micro-batches weighted by their target tokens across all processes; gradients unscaled, then clipped;
     validation every `eval_every` steps and at each epoch end;
  4. checkpoints `output_dir/<run>/step-<n>/` (PEFT adapter, optimizer, scheduler, gradient scaler, every
     process's RNG, position in the data order, effective config, the base's identity, the speaker's conds.pt,
     a model card), written atomically by the main process, the last `keep_last` kept;
  5. export (`export`): `adapter/` (the final adapter; every command here loads it with its base) and/or
     `merged/` (the adapter folded into T3, checked in float32 against the adapter model, saved with the
     unchanged VE, S3Gen and tokenizer in the official layout).

A run that stops for any reason resumes with `--resume` and ends with the same weights as one that did not. A
failed write (a full disk) removes what it half-wrote and prints the last good checkpoint with the command that
resumes it. Exit status: 0 done, 2 stopped with a message saying what to do, 1 an unexpected error (a traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from inference.adapters import (HELDOUT_FILE, AdapterMismatch, base_identity, check_settings, load_adapter,
                                merge_verified, write_base_identity)
from inference.chatterbox import load_chatterbox
from inference.checkpoints import CheckpointError
from inference.loading import family_for
from inference.models.t3 import T3Cond
from inference.models.tokenizers.languages import check_language
from inference.settings import command_overrides, command_parser, config_from_dict, load_config

from .adapter import LoraSettings, add_lora, enable_checkpointing, model_card, write_model_card
from .dataset import DatasetConfig, T3Collator, build_dataset
from .ingest import Clip, IngestConfig, IngestReport, audio_files, ingest
from .metrics import MetricsLogger
from .transcribe import TranscribeConfig, resolve_model, transcribe_clips

log = logging.getLogger("training.lora")

CONFIG_FILE = "training_config.json"
STATE_FILE = "training_state.pt"
SCHEDULES = ("cosine", "linear", "constant")
EXPORTS = ("adapter", "merged", "both")
# Below this much usable speech a warning says the voice will not generalise. Community LoRA recipes for
# Chatterbox use 10-60 min of one speaker; we have no real weights here to measure the curve ourselves.
RECOMMENDED_MINUTES = 10.0
MAX_SKIPPED_IN_A_ROW = 25  # fp16 steps whose gradients overflowed: the scaler halves its scale each time (2^-25)


@dataclass
class TrainConfig:
    model: str = "tiny"
    multilingual: bool = False
    audio_dir: str = "audio_data"
    output_dir: str = "checkpoints_dir"
    run: str = ""
    export: str = "adapter"
    epochs: int = 3
    max_steps: int = 0
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    text_loss_weight: float = 0.0
    exaggeration: float | None = None  # None: the family's (0.5; Turbo and Nano have no emotion input)
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    device: str = "auto"
    seed: int = 0
    eval_every: int = 0
    save_every: int = 100
    keep_last: int = 3
    plot_every_seconds: float = 10.0
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DatasetConfig = field(default_factory=DatasetConfig)
    transcribe: TranscribeConfig = field(default_factory=TranscribeConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "keep_last": self.keep_last}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name in ("max_steps", "warmup_steps", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.export not in EXPORTS:
            raise ValueError(f"export must be one of {', '.join(EXPORTS)}, got {self.export!r}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.device not in ("auto", "cpu"):
            raise ValueError(f"device must be auto or cpu (accelerate picks the GPU), got {self.device!r}")
        if "/" in self.run or self.run.startswith("."):
            raise ValueError(f"run must be a plain folder name, got {self.run!r}")


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


class WriteFailed(TrainingError):
    """A checkpoint or export could not be written (a full disk, a folder that became read-only); nothing
    half-written is left behind."""


# ------------------------------------------------------------------------------------------------ runs

def step_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (half-written ones are hidden `.step-*` folders)."""
    found = [p for p in run_dir.glob("step-*") if p.is_dir() and p.name[5:].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def find_run(output_dir: Path, run: str, resume: bool) -> Path:
    if run:
        return output_dir / run
    if not resume:
        return output_dir / _same_on_every_process(time.strftime("lora-%Y%m%d-%H%M%S"))
    runs = [d for d in output_dir.iterdir() if d.is_dir() and step_dirs(d)] if output_dir.is_dir() else []
    if not runs:
        raise TrainingError(f"--resume: no run with a checkpoint in {output_dir}")
    return max(runs, key=lambda d: step_dirs(d)[-1].stat().st_mtime)


def check_output_dir(cfg: TrainConfig, run_dir: Path) -> None:
    """Seconds after the start, before any model loads: the run's folder and the cache can be written. Without
    this, the first write fails minutes later, after the model and the dataset have loaded."""
    for folder in (run_dir, Path(cfg.output_dir) / ".cache"):
        existing = nearest_existing(folder)
        try:
            with tempfile.TemporaryFile(dir=existing):  # a real write: permissions, read-only mounts, not a folder
                pass
        except OSError as e:
            raise TrainingError(f"cannot write to the output folder {folder} ({existing}: {e.strerror or e}): make "
                                "it writable, or pick another with --output-dir") from e


def nearest_existing(path: Path) -> Path:
    """`path`, or the closest folder above it that exists (where its missing folders will be made)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def resume_command(run_dir: Path) -> str:
    return (f"python -m training.lora --resume --run {shlex.quote(run_dir.name)} "
            f"--output-dir {shlex.quote(str(run_dir.parent))}")


def write_failure_help(run_dir: Path, what: str, last_saved: Path | None) -> str:
    """What failed, the room left on the disk (torch.save reports a full disk only as "unexpected pos"), and
    how to go on from the last good checkpoint."""
    free = shutil.disk_usage(nearest_existing(run_dir)).free / 1e6
    text = f"{what}; {free:.1f} MB free on the disk holding {run_dir}."
    if last_saved is None:
        return text + (" No checkpoint was saved yet: free some space (or pick another --output-dir) and run the "
                       "same command again")
    return text + f" Last good checkpoint: {last_saved}. Free some space, then continue with: {resume_command(run_dir)}"


def use_cpu(cfg: TrainConfig) -> bool:
    return cfg.device == "cpu" or not torch.cuda.is_available()


def process_state(cfg: TrainConfig):
    """accelerate's view of the processes. CPU must be said explicitly: without it, processes started by
    torchrun on a machine without a GPU each train alone (accelerate then sees no distributed setup)."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu(cfg))


def _same_on_every_process(value):
    """`value` as the main process has it (a run name made from the clock must not differ between processes)."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    if PartialState().num_processes == 1:
        return value
    return broadcast_object_list([value])[0]


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, Path, Path | None]:
    """(effective config, run folder, checkpoint to resume or None). A resumed run keeps the config saved in
    its checkpoint; flags given now override it, except the adapter's shape."""
    overrides = command_overrides(args)
    cfg = load_config(TrainConfig, "training", args.config, overrides)
    process_state(cfg)
    run_dir = find_run(Path(cfg.output_dir), cfg.run, args.resume)
    checkpoints = step_dirs(run_dir) if run_dir.is_dir() else []
    if not args.resume:
        if checkpoints:
            raise TrainingError(f"{run_dir} already has checkpoints: pass --resume to continue it, "
                                "or another --run name for a new run")
        return cfg, run_dir, None
    if not checkpoints:
        log.warning("%s has no checkpoint yet: starting it from the beginning", run_dir)
        return cfg, run_dir, None
    last = checkpoints[-1]
    saved = json.loads((last / CONFIG_FILE).read_text())
    given = {o.split("=", 1)[0] for o in overrides}
    for key in ("lora.rank", "lora.alpha"):
        if key in given:
            name = key.split(".")[1]
            check_settings(last, **{name: getattr(cfg.lora, name)})
    if "lora.targets" in given and tuple(cfg.lora.targets) != tuple(saved["lora"]["targets"]):
        raise AdapterMismatch(f"lora targets mismatch: you asked for {list(cfg.lora.targets)} but the adapter in "
                              f"{last} adapts {saved['lora']['targets']}")
    saved["run"] = run_dir.name
    return config_from_dict(TrainConfig, saved, overrides, str(last / CONFIG_FILE)), run_dir, last


# ------------------------------------------------------------------------------------------------ data

def check_audio_dir(cfg: TrainConfig) -> None:
    """Seconds after the start, before any model loads: the folder exists and holds something to read."""
    folder = Path(cfg.audio_dir)
    if not folder.is_dir():
        raise TrainingError(f"audio folder not found: {folder} (set --audio-dir, or put recordings in it)")
    if not audio_files(folder, cfg.ingest):
        raise TrainingError(f"{folder} holds no recordings (read are {' '.join(cfg.ingest.extensions)}): put "
                            "10+ minutes of one speaker's speech there")


def min_clips(cfg: TrainConfig) -> int:
    """Clips the training contract needs: two to train on (each conditioned on the other, never on itself),
    plus one held out for validation unless val_fraction is 0."""
    return 2 + (cfg.data.val_fraction > 0)


def too_little(n: int, minutes: float, cfg: TrainConfig, what: str) -> TrainingError:
    need = min_clips(cfg)
    return TrainingError(f"only {n} usable {what} ({minutes:.1f} min of speech); fine-tuning needs at least {need}: "
                         "two to train on, each conditioned on the other's voice rather than its own"
                         + (", and one held out for validation" if need == 3 else "")
                         + f". Add recordings ({RECOMMENDED_MINUTES:g}+ minutes of one speaker is the aim)")


def gather_clips(cfg: TrainConfig, accelerator) -> tuple[IngestReport, dict[str, str]]:
    """Ingested clips and their transcripts; no model is needed yet. The main process works first, the others
    then read its caches."""
    cache = Path(cfg.output_dir) / ".cache"
    with accelerator.main_process_first():
        report = ingest(cfg.audio_dir, cache, cfg.ingest)
        accelerator.print(f"audio: {report.summary()}")
        if not report.clips:
            raise TrainingError(f"no usable audio in {cfg.audio_dir}: {report.summary()}. Add recordings of one "
                                f"voice ({' '.join(cfg.ingest.extensions)}), each at least 1 s of speech")
        if len(report.clips) < min_clips(cfg):
            raise too_little(len(report.clips), report.minutes, cfg, "clips")
        texts = transcribe_clips(report.clips, cfg.transcribe, cache / "transcripts",
                                 progress=accelerator.is_main_process)
    return report, texts


def prepare_data(cfg: TrainConfig, model, report: IngestReport, texts: dict[str, str], accelerator):
    """Cached rows from the clips, checked for the minimum the contract needs."""
    if model.t3.cfg.is_multilingual:
        if not cfg.data.language:
            raise TrainingError("the multilingual model needs the language of the recordings: --data.language fr")
        check_language(cfg.data.language)
        if cfg.transcribe.language not in (None, cfg.data.language):
            log.warning("Whisper transcribes as %r but the recordings are %r: set --transcribe.language",
                        cfg.transcribe.language, cfg.data.language)
    with accelerator.main_process_first():
        try:
            data = build_dataset(report.clips, texts, model, Path(cfg.output_dir) / ".cache", cfg.data,
                                 progress=accelerator.is_main_process)
        except ValueError as e:
            raise TrainingError(f"no usable training rows: {e}") from e
    train_rows, val_rows = data["train"], data["validation"]
    minutes = (sum(train_rows["duration"]) + sum(val_rows["duration"])) / 60
    if len(train_rows) < 2 or (cfg.data.val_fraction > 0 and len(val_rows) == 0):
        raise too_little(len(train_rows) + len(val_rows), minutes, cfg, "clips with transcripts")
    accelerator.print(f"dataset: {len(train_rows)} training clips ({sum(train_rows['duration']) / 60:.1f} min), "
                      f"{len(val_rows)} validation clips ({sum(val_rows['duration']) / 60:.1f} min)")
    if minutes < RECOMMENDED_MINUTES:
        accelerator.print(f"WARNING: {minutes:.1f} min of usable speech; a voice fine-tune wants "
                          f"{RECOMMENDED_MINUTES:g}+ minutes, with less the adapter learns these few sentences "
                          "rather than the voice")
    return data


def voice_clip(train, min_seconds: float | None = None) -> str:
    """The training clip closest to 10 s: the built-in voice (conds.pt) of the exports. Turbo and Nano take only
    clips longer than their `min_seconds` (5 s) as a voice."""
    durations = np.asarray(train["duration"], dtype=float)
    distance = np.abs(durations - 10.0)
    if min_seconds is not None:
        distance = np.where(durations > min_seconds, distance, np.inf)
        if not np.isfinite(distance).any():
            raise TrainingError(f"no training clip is longer than {min_seconds:g} s, the shortest voice this model "
                                "takes: add longer recordings (5-15 s each is best)")
    return train["path"][int(np.argmin(distance))]


def epoch_steps(n_rows: int, epoch: int, cfg: TrainConfig, rank: int = 0,
                world: int = 1) -> list[list[tuple[int, list[int]]]]:
    """This process's optimizer steps of `epoch`: each a list of (micro-batch index in the epoch, row indices).

    The order is a pure function of (seed, epoch), so a resumed run sees exactly the batches it would have.
    With several processes, step s is the same set of micro-batches as in one process with `world` times the
    accumulation: each process takes every world-th one, and all take the same number of steps.
    """
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n_rows).tolist()
    micro = [(i, order[j:j + cfg.batch_size]) for i, j in enumerate(range(0, n_rows, cfg.batch_size))]
    if world > 1:
        usable = len(micro) // world * world
        if usable == 0:
            raise TrainingError(f"{n_rows} training clips make fewer micro-batches of {cfg.batch_size} than the "
                                f"{world} processes: use a smaller --batch-size or fewer processes")
        micro = micro[rank:usable:world]
    return [micro[i:i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)]


# ----------------------------------------------------------------------------------------- optimisation

class SpeechObjective(nn.Module):
    """T3's training loss as the forward of a module, so that DDP (which syncs gradients only for what runs
    through forward) sees it. Returns (objective, speech loss, text loss), each a mean over target tokens."""

    def __init__(self, t3, text_weight: float):
        super().__init__()
        self.t3 = t3
        self.text_weight = text_weight

    def forward(self, text_tokens, text_token_lens, speech_tokens, speech_token_lens, speaker_emb, prompt_tokens,
                emotion_adv):
        cond = T3Cond(speaker_emb=speaker_emb, cond_prompt_speech_tokens=prompt_tokens, emotion_adv=emotion_adv)
        loss_text, loss_speech = self.t3.loss(cond, text_tokens, text_token_lens, speech_tokens, speech_token_lens)
        return loss_speech + self.text_weight * loss_text, loss_speech, loss_text


BATCH_TENSORS = ("text_tokens", "text_token_lens", "speech_tokens", "speech_token_lens", "speaker_emb",
                 "prompt_tokens", "emotion_adv")


def batch_inputs(batch: dict, device) -> dict:
    return {name: batch[name].to(device) for name in BATCH_TENSORS}


def target_tokens(batch: dict) -> int:
    """Speech tokens the loss predicts (each row's first token is input only)."""
    return int((batch["speech_token_lens"] - 1).sum())


@dataclass
class Precision:
    """Autocast dtype and gradient scaler of a run, handled with torch.amp directly: accelerate leaves fp16 on a
    CPU unscaled and in float32, so its path could not be the one users get on a GPU. Weights stay float32."""

    name: str  # no | bf16 | fp16
    device_type: str

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def choose_precision(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    """Linear warmup over `warmup_steps`, then cosine, linear or constant. The first step already has
    lr / warmup_steps and the last a little above 0 (transformers' schedules spend the first step at 0)."""
    warmup = min(cfg.warmup_steps, total_steps)

    def factor(done: int) -> float:  # lr multiplier for the step after `done` completed ones
        if done < warmup:
            return (done + 1) / warmup
        progress = (done - warmup) / max(1, total_steps - warmup)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress if cfg.schedule == "linear" else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class StepResult:
    objective: float  # token-weighted mean over every process's micro-batches
    loss_speech: float
    grad_norm: float  # before clipping
    lr: float  # the learning rate this step used
    skipped: bool  # fp16: the scaler found inf/NaN gradients and skipped the update
    tokens: int  # text + speech tokens this process consumed


def micro_batch_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def optimizer_step(module, micro_batches: list[dict], seeds: list[int], optimizer, scheduler, precision: Precision,
                   accelerator, max_grad_norm: float, params: list) -> StepResult:
    """One optimizer step over this process's micro-batches, gradients accumulated without syncing until the
    last. The step is the same however the work is spread over processes and accumulation: each micro-batch's
    loss is weighted by its share of the step's target tokens over ALL processes (times the number of processes,
    which DDP divides by), and its dropout (LoRA's, the perceiver's) draws from a generator seeded for that
    micro-batch (`seeds`), not from a process's running random state."""
    world = accelerator.num_processes
    counts = [target_tokens(b) for b in micro_batches]
    total = _sum_over_processes(accelerator, sum(counts))
    objective = speech = 0.0
    tokens = 0
    bad_loss = None
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    for k, (batch, n, seed) in enumerate(zip(micro_batches, counts, seeds)):
        weight = n / total
        sync = accelerator.no_sync(module) if k < len(micro_batches) - 1 else contextlib.nullcontext()
        with sync, torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            with precision.autocast():
                loss, loss_speech, _ = module(**batch_inputs(batch, accelerator.device))
            precision.scaler.scale(loss.float() * (weight * world)).backward()
        value = float(loss.detach())
        bad_loss = bad_loss if math.isfinite(value) else value
        objective += value * weight
        speech += float(loss_speech.detach()) * weight
        tokens += int(batch["text_token_lens"].sum() + batch["speech_token_lens"].sum())
    # decided together, so that no process stops while the others wait for it; fp16 leaves it to the scaler
    if _sum_over_processes(accelerator, int(bad_loss is not None)) and not precision.scaler.is_enabled():
        optimizer.zero_grad(set_to_none=True)
        raise NonFinite(f"the loss became {bad_loss if bad_loss is not None else 'non-finite in another process'}")
    precision.scaler.unscale_(optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf))
    if not math.isfinite(grad_norm) and not precision.scaler.is_enabled():
        raise NonFinite(f"the gradient norm became {grad_norm}")
    lr = scheduler.get_last_lr()[0]
    scale = precision.scaler.get_scale()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    skipped = precision.scaler.is_enabled() and precision.scaler.get_scale() < scale
    if not skipped:
        scheduler.step()  # a skipped update does not use up a step of the schedule
    optimizer.zero_grad(set_to_none=True)
    return StepResult(_sum_over_processes(accelerator, objective), _sum_over_processes(accelerator, speech),
                      grad_norm, lr, skipped, tokens)


class NonFinite(ArithmeticError):
    """A loss or gradient norm that is NaN or infinite."""


@torch.no_grad()
def validate(module: SpeechObjective, rows, pool, collator: T3Collator, cfg: TrainConfig, precision: Precision,
             accelerator) -> float | None:
    """Token-weighted mean speech loss over the validation split, each row with a fixed other clip's voice;
    the batches are shared out over the processes."""
    if len(rows) == 0:
        return None
    module.eval()
    total, count = 0.0, 0
    starts = list(range(0, len(rows), cfg.batch_size))[accelerator.process_index::accelerator.num_processes]
    try:
        for i in starts:
            batch = collator(rows[i:i + cfg.batch_size], pool, step=i)
            with precision.autocast():
                _, loss_speech, _ = module(**batch_inputs(batch, accelerator.device))
            n = target_tokens(batch)
            total, count = total + float(loss_speech) * n, count + n
    finally:
        module.train()
    return _sum_over_processes(accelerator, total) / max(_sum_over_processes(accelerator, count), 1)


def _sum_over_processes(accelerator, value):
    if accelerator.num_processes == 1:
        return value
    summed = accelerator.reduce(torch.tensor(float(value), dtype=torch.float64, device=accelerator.device), "sum")
    return type(value)(summed.item())


def out_of_memory_help(cfg: TrainConfig) -> str:
    smaller = max(1, cfg.batch_size // 2)
    return (f"out of memory with batch_size {cfg.batch_size}: try --batch-size {smaller} --grad-accum "
            f"{cfg.grad_accum * cfg.batch_size // smaller} (same effective batch), --gradient-checkpointing, "
            "or --mixed-precision bf16")


# ------------------------------------------------------------------------------------------ checkpoints

def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class RunFacts:
    """What the model cards and exports say about a run."""

    cfg: TrainConfig
    base: dict  # inference.adapters.base_identity
    precision: str
    processes: int
    train_clips: int
    train_minutes: float
    val_clips: int
    val_minutes: float
    total_steps: int
    train_loss: float | None = None  # the mean of the epoch just finished, else the last step's loss
    val_loss: float | None = None

    def table(self, step: int) -> dict[str, str]:
        lora = self.cfg.lora
        fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
        return {"training data": f"{self.train_minutes:.1f} min in {self.train_clips} clips (+ {self.val_minutes:.1f} "
                                 f"min in {self.val_clips} held-out validation clips)",
                "steps": f"{step} of {self.total_steps} (batch {self.cfg.batch_size} x accumulation "
                         f"{self.cfg.grad_accum} x {self.processes} process(es), lr {self.cfg.lr:g}, "
                         f"{self.cfg.schedule})",
                "LoRA": f"rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout:g}, on "
                        f"{', '.join(lora.targets)}",
                "precision": self.precision,
                "final train loss": fmt(self.train_loss), "final validation loss": fmt(self.val_loss)}


def adapter_usage(folder: Path, base: str) -> list[str]:
    return [f"python -m inference.tts --model {folder} --text \"Hello there.\" --out hello.wav",
            f"python -m evaluation --tuned-model-path {folder}",
            f"python -m training.merge --checkpoint {folder} --base {base} --out my_model   # official layout"]


def save_checkpoint(run_dir: Path, step: int, accelerator, peft_model, optimizer, scheduler, precision: Precision,
                    facts: RunFacts, conds, data_info: dict) -> Path:
    """Write step-<n>/ under a temporary name and rename it into place, then drop the oldest extra ones.
    Every process stores its own RNG state there; the main process writes the rest. A write that fails in any
    process raises WriteFailed in all of them, with the half-written folder removed."""
    final = run_dir / f"step-{step}"
    tmp = run_dir / f".step-{step}.tmp"
    main = accelerator.is_main_process

    def prepare() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

    def write_rest() -> None:
        peft_model.save_pretrained(str(tmp), save_embedding_layers=False)  # no hub lookup
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": precision.scaler.state_dict(), "data": data_info}, tmp / STATE_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(asdict(facts.cfg), indent=1))
        write_base_identity(tmp, facts.base)
        conds.save(tmp / "conds.pt")
        write_model_card(tmp, model_card(f"Checkpoint {run_dir.name}/step-{step}", facts.base, facts.table(step),
                                         adapter_usage(final, facts.base["model"])))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)

    def write_rng() -> None:
        torch.save(rng_state(), tmp / f"rng-{accelerator.process_index}.pt")

    what = f"checkpoint {final}"
    all_written(accelerator, tmp, what, attempt(prepare) if main else None)  # the others wait for the folder
    all_written(accelerator, tmp, what, attempt(write_rng))
    all_written(accelerator, tmp, what, attempt(write_rest) if main else None)  # renamed only when all are in
    if main:
        for old in step_dirs(run_dir)[:-facts.cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def attempt(write: Callable[[], None]) -> Exception | None:
    """Run `write` and return what it raised, if anything. Any exception counts, because a full disk shows up
    as OSError from open(), SafetensorError from safetensors and RuntimeError ("unexpected pos") from
    torch.save."""
    try:
        write()
    except Exception as e:  # noqa: BLE001 - reported with its message by WriteFailed
        return e
    return None


def all_written(accelerator, tmp: Path, what: str, error: Exception | None) -> None:
    """Raise WriteFailed in every process if any process failed its part, after removing the half-written `tmp`
    (it would hold the disk's last space). Every process must call it: it is a collective."""
    if not _sum_over_processes(accelerator, int(error is not None)):
        return
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    raise WriteFailed(f"could not write {what} ({error or 'another process failed to write its part'})") from error


def load_training_state(checkpoint: Path, rank: int) -> dict:
    state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)
    rng_file = checkpoint / f"rng-{rank}.pt"
    state["rng"] = torch.load(rng_file, weights_only=False) if rng_file.is_file() else state.get("rng")
    return state


def restore_training_state(checkpoint: Path, rank: int, data_info: dict, optimizer, scheduler,
                           precision: Precision) -> int:
    """Optimizer, scheduler, loss scale and RNG as they were at `checkpoint`; returns its step. Refused when the
    data or the number of processes changed since, because the run could not continue exactly."""
    state = load_training_state(checkpoint, rank)
    then = state["data"]
    if then["train_rows"] != data_info["train_rows"] or then["steps_per_epoch"] != data_info["steps_per_epoch"] \
            or then.get("processes", 1) != data_info["processes"]:
        raise TrainingError(f"the training data or batching changed since {checkpoint} ({then['train_rows']} "
                            f"clips and {then.get('processes', 1)} process(es) then, {data_info['train_rows']} and "
                            f"{data_info['processes']} now): the run cannot be resumed exactly; start a new run")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        precision.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["step"]


# ------------------------------------------------------------------------------------------------ export

def heldout_record(val_paths: Sequence[str], clips: Sequence[Clip]) -> dict:
    """What HELDOUT_FILE holds: the clips held out of training (evaluation's reference voice), and `originals`,
    the user's recording behind each one read from a corrected copy in the cache (a DC offset removed). Its
    transcript lies beside the recording, and evaluation must not take the recording for another clip."""
    copies = {str(c.path.resolve()): str(c.source.resolve()) for c in clips if c.whole and c.path != c.source}
    held = [str(Path(p).resolve()) for p in val_paths]
    return {"heldout_clips": held, "originals": {p: copies[p] for p in held if p in copies}}


def export(run_dir: Path, peft_model, model, conds, heldout_clips: dict, facts: RunFacts, step: int) -> Path:
    """Write `adapter/` and/or `merged/` (cfg.export), each atomically; returns the merged folder if written,
    else the adapter folder. The adapter is saved first: merging folds it into T3 in place. `heldout_clips`:
    what HELDOUT_FILE holds (`heldout_record`)."""
    heldout = json.dumps(heldout_clips, indent=2) + "\n"
    written = {}
    if facts.cfg.export in ("adapter", "both"):
        folder = run_dir / "adapter"

        def write_adapter(tmp: Path) -> None:
            peft_model.save_pretrained(str(tmp), save_embedding_layers=False)  # no hub lookup
            write_base_identity(tmp, facts.base)
            (tmp / CONFIG_FILE).write_text(json.dumps(asdict(facts.cfg), indent=1))
            conds.save(tmp / "conds.pt")
            (tmp / HELDOUT_FILE).write_text(heldout)  # `python -m evaluation` takes its reference voice from here
            write_model_card(tmp, model_card(f"{run_dir.name} (LoRA adapter)", facts.base, facts.table(step),
                                             adapter_usage(folder, facts.base["model"])))

        written["adapter"] = publish(folder, write_adapter)
    if facts.cfg.export in ("merged", "both"):
        folder = run_dir / "merged"
        merged, diff = merge_verified(peft_model)
        print(f"merged T3's float32 logits match the adapter model's (max relative difference {diff:.1e})")
        model.t3 = merged.float().cpu()
        model.s3gen.cpu(), model.ve.cpu()
        model.conds = conds.to("cpu")

        def write_merged(tmp: Path) -> None:
            model.save_local(tmp)
            write_base_identity(tmp, facts.base)
            (tmp / HELDOUT_FILE).write_text(heldout)
            write_model_card(tmp, model_card(f"{run_dir.name} (merged)", facts.base, facts.table(step),
                                             [f"python -m inference.tts --model {folder} --text \"Hello there.\" "
                                              "--out hello.wav", f"python -m evaluation --tuned-model-path {folder}"]))

        written["merged"] = publish(folder, write_merged)
    for kind, folder in written.items():
        print(f"{'merged model' if kind == 'merged' else 'adapter'}: {folder}")
    return written.get("merged") or written["adapter"]


def publish(folder: Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` into a hidden folder beside `folder`, then move it into place: readers never see half an
    export, and a failed write (WriteFailed) leaves nothing behind to hold the disk's space."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    error = attempt(lambda: write(tmp))
    if error is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteFailed(f"could not write {folder} ({error})") from error
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


# ------------------------------------------------------------------------------------------------ recipe

def train(cfg: TrainConfig, run_dir: Path, resume_from: Path | None = None, model=None) -> Path:
    """The whole recipe; returns the merged model folder when one is exported, else the adapter folder.

    model: an already loaded ChatterboxTTS to fine-tune in place; by default `cfg.model` is loaded.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    # --- data first: no model is loaded before the recordings are known to be enough and the output writable
    family = model.FAMILY if model is not None else family_for(cfg.model, cfg.multilingual)
    try:  # known from the family alone: a wrong target or setting fails now, not after the data is built
        cfg.lora = cfg.lora.for_backbone(family.t3, family.name)
        family.check_settings(exaggeration=cfg.exaggeration)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    check_audio_dir(cfg)
    check_output_dir(cfg, run_dir)
    resolve_model(cfg.transcribe)
    process_state(cfg)
    accelerator = Accelerator(cpu=use_cpu(cfg), mixed_precision="no")  # precision: see Precision
    device = accelerator.device
    report, texts = gather_clips(cfg, accelerator)

    if model is None:
        model = load_chatterbox(cfg.model, cfg.multilingual, device)
    if model.is_preset:
        accelerator.print("NOTE: a preset has random weights; its losses and output say nothing about speech")
    data = prepare_data(cfg, model, report, texts, accelerator)
    train_rows, val_rows = data["train"], data["validation"]
    conds = model.prepare_conditionals(voice_clip(train_rows, family.voice.min_seconds), exaggeration=cfg.exaggeration)
    model.s3gen.cpu(), model.ve.cpu()  # not needed until the export: free accelerator memory
    collator = T3Collator.for_model(model, seed=cfg.seed, emotion_adv=cfg.exaggeration)
    val_collator = T3Collator.for_model(model, seed=cfg.seed + 1, emotion_adv=cfg.exaggeration)

    # --- model: LoRA on the backbone's projections, everything else frozen
    base = base_identity(model, cfg.model)
    set_seed(cfg.seed)  # here, so the adapter's init and dropout do not depend on whether the data was cached
    if resume_from is not None:
        peft_model = load_adapter(model.t3, resume_from, trainable=True)
    else:
        peft_model = add_lora(model.t3, cfg.lora, base["model"])
    t3 = model.t3  # peft injected its layers into this module in place
    if cfg.gradient_checkpointing:
        enable_checkpointing(t3)
    t3.train()
    params = [p for p in t3.parameters() if p.requires_grad]
    accelerator.print(f"LoRA rank {cfg.lora.rank}, alpha {cfg.lora.alpha:g} on {', '.join(cfg.lora.targets)}: "
                      f"{sum(p.numel() for p in params):,} trainable of {sum(p.numel() for p in t3.parameters()):,}")

    # --- schedule of steps
    world, rank = accelerator.num_processes, accelerator.process_index
    steps_per_epoch = len(epoch_steps(len(train_rows), 0, cfg, rank, world))
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    data_info = {"train_rows": len(train_rows), "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                 "processes": world, "seed": cfg.seed, "order": "numpy default_rng([seed, epoch]).permutation"}

    precision = Precision(choose_precision(cfg, device), device.type)
    objective = SpeechObjective(t3, cfg.text_loss_weight)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    module, optimizer = accelerator.prepare(objective, optimizer)
    accelerator.print(f"precision: {precision.name}; processes: {world}; {total_steps} steps "
                      f"({steps_per_epoch} per epoch)")

    step = 0
    if resume_from is not None:
        step = restore_training_state(resume_from, rank, data_info, optimizer, scheduler, precision)
        accelerator.print(f"resumed {run_dir.name} from {resume_from.name}")

    facts = RunFacts(cfg, base, precision.name, world, len(train_rows), sum(train_rows["duration"]) / 60,
                     len(val_rows), sum(val_rows["duration"]) / 60, total_steps)
    metrics = None
    if accelerator.is_main_process:
        metrics = MetricsLogger(run_dir, plot_every_seconds=cfg.plot_every_seconds,
                                resume=resume_from is not None, resume_step=step if resume_from else None,
                                total_steps=total_steps, max_grad_norm=cfg.max_grad_norm, background=True)
    last_saved = resume_from
    bar = tqdm(total=total_steps, initial=step, desc="training", unit="step", disable=not accelerator.is_main_process)

    def checkpoint() -> None:
        nonlocal last_saved
        last_saved = save_checkpoint(run_dir, step, accelerator, peft_model, optimizer, scheduler, precision, facts,
                                     conds, data_info)

    def evaluate(epoch: int) -> None:
        facts.val_loss = validate(accelerator.unwrap_model(module), val_rows, train_rows, val_collator, cfg,
                                  precision, accelerator)
        if facts.val_loss is not None and metrics is not None:
            metrics.log_val(step, epoch, facts.val_loss)
            bar.set_postfix_str(f"{bar.postfix}, val {facts.val_loss:.3f}" if bar.postfix else
                                f"val {facts.val_loss:.3f}")

    # --- the loop
    skipped_in_a_row = 0
    try:
        while step < total_steps:
            epoch, first = divmod(step, steps_per_epoch)
            steps = epoch_steps(len(train_rows), epoch, cfg, rank, world)
            for index in range(first, len(steps)):
                started = time.perf_counter()
                # conditioning is drawn per micro-batch of the epoch: the same whatever the processes/accumulation
                micro_batches = [collator(train_rows[ids], train_rows, step=epoch * 1_000_000 + m)
                                 for m, ids in steps[index]]
                seeds = [micro_batch_seed(cfg.seed, epoch, m) for m, _ in steps[index]]
                try:
                    result = optimizer_step(module, micro_batches, seeds, optimizer, scheduler, precision,
                                            accelerator, cfg.max_grad_norm, params)
                except NonFinite as e:
                    raise TrainingError(f"{e} at step {step + 1}; stopped. Last good checkpoint: "
                                        f"{last_saved or 'none yet'} (resume it with --resume, perhaps with a "
                                        "lower --lr)") from None
                step += 1
                skipped_in_a_row = skipped_in_a_row + 1 if result.skipped else 0
                if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                    raise TrainingError(f"fp16: the last {skipped_in_a_row} steps overflowed and were skipped (loss "
                                        f"scale now {precision.scaler.get_scale():g}); use --mixed-precision bf16 "
                                        "if the GPU has it, or a lower --lr. Last good checkpoint: "
                                        f"{last_saved or 'none yet'}")
                facts.train_loss = result.objective  # replaced by the epoch's mean when the epoch ends
                rate = _sum_over_processes(accelerator, result.tokens) / (time.perf_counter() - started)
                if metrics is not None:
                    metrics.log_train(step, epoch, result.objective, lr=result.lr, grad_norm=result.grad_norm,
                                      tokens_per_s=rate, loss_speech=result.loss_speech, skipped=result.skipped)
                bar.update(1)
                bar.set_postfix(loss=f"{result.objective:.3f}", lr=f"{result.lr:.1e}")

                epoch_done = index == len(steps) - 1
                if (cfg.eval_every and step % cfg.eval_every == 0) or epoch_done:
                    evaluate(epoch)
                if epoch_done and metrics is not None:
                    facts.train_loss = metrics.end_epoch(epoch, step)
                if epoch_done or step == total_steps or (cfg.save_every and step % cfg.save_every == 0):
                    checkpoint()
                if step == total_steps:
                    break
    except (WriteFailed, OSError) as e:  # a full disk: metrics.jsonl, a checkpoint
        raise TrainingError(write_failure_help(run_dir, f"stopped at step {step}: {e}", last_saved)) from e
    except torch.OutOfMemoryError as e:
        raise TrainingError(out_of_memory_help(cfg)) from e
    except RuntimeError as e:
        if "out of memory" in str(e).lower():
            raise TrainingError(out_of_memory_help(cfg)) from e
        raise
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()

    # --- export: the adapter and/or the merged T3 + the unchanged rest, in the official layout
    out = None
    if accelerator.is_main_process:
        try:
            out = export(run_dir, peft_model, model, conds, heldout_record(val_rows["path"], report.clips),
                         facts, step)
        except WriteFailed as e:
            raise TrainingError(write_failure_help(run_dir, f"training finished, but {e}", last_saved)) from e
        print(f"metrics plot: {run_dir / 'training_metrics.png'}")
    accelerator.wait_for_everyone()
    return _same_on_every_process(out)


# --------------------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m training.lora", TrainConfig, "training", __doc__.split("\n\n")[0],
                       epilog="Flags and key=value words override config.toml's [training] section (--config picks "
                              "another file); the defaults shown are that file's values.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resume", action="store_true",
                   help="continue --run (default: the newest run in output_dir) from its last checkpoint")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "datasets", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg, run_dir, resume_from = resolve_config(args)
        print(f"run: {run_dir}", file=sys.stderr)
        train(cfg, run_dir, resume_from)
    except (TrainingError, AdapterMismatch, CheckpointError, ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    release_processes()
    return 0


def release_processes() -> None:
    """Tear down torchrun's process group while Python is still whole. Left to interpreter exit, gloo's worker
    threads can abort the process (SIGABRT, "terminate called without an active exception") after a run that
    succeeded. Only on success: after a failure the other processes may sit in a collective and never answer."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # train() ended on a barrier: nothing is in flight


if __name__ == "__main__":
    sys.exit(main())
