"""LoRA fine-tuning of T3 on a folder of one speaker's recordings, ending with a merged model.

    python -m training.lora                                   # config.toml [training]: shipped sample, tiny preset
    python -m training.lora --model /path/to/official/weights --epochs 3 --lora.rank 32
    python -m training.lora --resume                          # continue the newest run from its last checkpoint
    accelerate launch -m training.lora --model ...            # several GPUs, same code

Every key of config.toml's [training] section (and its sub-tables lora, data, transcribe, ingest) is a flag:
`--batch-size 8`, `--lora.alpha 64`, `--data.val-fraction 0.1`.

What it does, top to bottom (`train`):
  1. ingest `audio_dir` (validation, long files split at pauses), transcribe with Whisper (cached), build the
     cached `datasets` rows (text tokens, S3 speech tokens, speaker embedding, prompt tokens);
  2. wrap T3 in LoRA adapters (everything else frozen); AdamW with warmup and a cosine/linear schedule;
  3. the loop: each step is `grad_accum` micro-batches; every row is conditioned on ANOTHER clip of the
     speaker; loss = speech-token cross-entropy (+ text_loss_weight * text cross-entropy), padding masked and
     micro-batches weighted by their target tokens; mixed precision and device placement by `accelerate`;
     gradients unscaled, then clipped; validation loss every `eval_every` steps and at each epoch end;
  4. checkpoints `output_dir/<run>/step-<n>/` (PEFT adapter, optimizer, scheduler, RNG, position in the data
     order, effective config, the speaker's conds.pt), written atomically, the last `keep_last` kept;
     metrics.jsonl and the live training_metrics.png beside them;
  5. the adapter merged into T3 (checked against the adapter model's logits) and saved with the unchanged
     VE, S3Gen and tokenizer in the official layout: `output_dir/<run>/merged/`.

A run that stops for any reason resumes with `--resume` and ends with the same weights as one that did not.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from inference.chatterbox import load_chatterbox
from inference.checkpoints import CheckpointError
from inference.models.tokenizers.languages import check_language
from inference.settings import add_config_flags, config_from_dict, flag_overrides, load_config

from .adapter import AdapterMismatch, LoraSettings, add_lora, check_settings, load_adapter, merge_verified
from .dataset import DatasetConfig, T3Collator, batch_cond, build_dataset
from .ingest import IngestConfig, ingest
from .metrics import MetricsLogger
from .transcribe import TranscribeConfig, transcribe_files

log = logging.getLogger("training.lora")

CONFIG_FILE = "training_config.json"
STATE_FILE = "training_state.pt"
HELDOUT_FILE = "heldout_clips.json"  # in merged/: validation clips, never trained on
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class TrainConfig:
    model: str = "tiny"  # 'tiny' (random weights: no speech) | folder in the official layout | HF repo id
    multilingual: bool = False  # train the multilingual model (then set data.language)
    audio_dir: str = "audio_data"
    output_dir: str = "checkpoints_dir"
    run: str = ""  # run folder under output_dir; empty: lora-<date>-<time> (with --resume: the newest run)
    epochs: int = 3
    max_steps: int = 0  # stop after this many optimizer steps; 0: all epochs
    batch_size: int = 4
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-4
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | linear | constant, each after a linear warmup
    warmup_steps: int = 10
    max_grad_norm: float = 1.0  # clip the (unscaled) gradient norm to this; 0 disables clipping
    text_loss_weight: float = 0.0  # weight of the text-token cross-entropy beside the speech one
    exaggeration: float = 0.5  # emotion value the model is conditioned on, as at inference
    mixed_precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU) | no | bf16 | fp16
    gradient_checkpointing: bool = False  # less memory, ~30% slower steps
    device: str = "auto"  # auto: the GPU when there is one; cpu forces the CPU
    seed: int = 0
    eval_every: int = 0  # validation every N steps (0: at epoch ends only)
    save_every: int = 100  # checkpoint every N steps (and at each epoch end)
    keep_last: int = 3  # checkpoints kept per run
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
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.device not in ("auto", "cpu"):
            raise ValueError(f"device must be auto or cpu (accelerate picks the GPU), got {self.device!r}")
        if "/" in self.run or self.run.startswith("."):
            raise ValueError(f"run must be a plain folder name, got {self.run!r}")


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


# ------------------------------------------------------------------------------------------------ runs

def step_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (half-written ones are hidden `.step-*` folders)."""
    found = [p for p in run_dir.glob("step-*") if p.is_dir() and p.name[5:].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def find_run(output_dir: Path, run: str, resume: bool) -> Path:
    if run:
        return output_dir / run
    if not resume:
        return output_dir / time.strftime("lora-%Y%m%d-%H%M%S")
    runs = [d for d in output_dir.iterdir() if d.is_dir() and step_dirs(d)] if output_dir.is_dir() else []
    if not runs:
        raise TrainingError(f"--resume: no run with a checkpoint in {output_dir}")
    return max(runs, key=lambda d: step_dirs(d)[-1].stat().st_mtime)


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, Path, Path | None]:
    """(effective config, run folder, checkpoint to resume or None). A resumed run keeps the config saved in
    its checkpoint; flags given now override it, except the adapter's shape."""
    overrides = flag_overrides(args)
    cfg = load_config(TrainConfig, "training", args.config, overrides)
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

def prepare_data(cfg: TrainConfig, model, accelerator):
    """Clips -> transcripts -> cached rows. Raises TrainingError when nothing usable is left."""
    cache = Path(cfg.output_dir) / ".cache"
    if model.t3.cfg.is_multilingual:
        if not cfg.data.language:
            raise TrainingError("the multilingual model needs the language of the recordings: --data.language fr")
        check_language(cfg.data.language)
        if cfg.transcribe.language not in (None, cfg.data.language):
            log.warning("Whisper transcribes as %r but the recordings are %r: set --transcribe.language",
                        cfg.transcribe.language, cfg.data.language)
    with accelerator.main_process_first():
        report = ingest(cfg.audio_dir, cache, cfg.ingest)
        if not report.clips:
            raise TrainingError(f"no usable audio in {cfg.audio_dir}: {report.summary()}. Add WAV/FLAC/OGG "
                                "recordings of one voice, each at least 1 s of speech")
        accelerator.print(f"audio: {report.summary()}")
        paths = [c.path for c in report.clips]
        texts = transcribe_files(paths, cfg.transcribe, cache / "transcripts",
                                 progress=accelerator.is_main_process)
        try:
            data = build_dataset(report.clips, texts, model, cache, cfg.data, progress=accelerator.is_main_process)
        except ValueError as e:
            raise TrainingError(f"no usable training rows: {e}") from e
    if len(data["train"]) == 0:
        raise TrainingError("no clip is left for training after the validation split")
    accelerator.print(f"dataset: {len(data['train'])} training clips, {len(data['validation'])} validation clips")
    return data


def voice_clip(train) -> str:
    """The training clip closest to 10 s: the built-in voice (conds.pt) of the merged model."""
    durations = np.asarray(train["duration"], dtype=float)
    return train["path"][int(np.argmin(np.abs(durations - 10.0)))]


def epoch_steps(n_rows: int, epoch: int, cfg: TrainConfig, rank: int = 0, world: int = 1) -> list[list[list[int]]]:
    """This process's optimizer steps of `epoch`: each a list of micro-batches of row indices.

    The order is a pure function of (seed, epoch), so a resumed run sees exactly the batches it would have.
    With several processes each takes every world-th micro-batch and all take the same number of steps.
    """
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n_rows).tolist()
    micro = [order[i:i + cfg.batch_size] for i in range(0, n_rows, cfg.batch_size)]
    if world > 1:
        usable = len(micro) // world * world
        if usable == 0:
            raise TrainingError(f"{n_rows} clips make fewer micro-batches than the {world} processes")
        micro = micro[rank:usable:world]
    return [micro[i:i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)]


# ----------------------------------------------------------------------------------------- optimisation

def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    name = "constant_with_warmup" if cfg.schedule == "constant" else cfg.schedule
    return get_scheduler(name, optimizer, num_warmup_steps=min(cfg.warmup_steps, total_steps),
                         num_training_steps=total_steps)


def choose_precision(cfg: TrainConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def batch_loss(t3, batch: dict, device, text_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(objective, speech loss, text loss) of one collated micro-batch, each a mean over its target tokens."""
    loss_text, loss_speech = t3.loss(batch_cond(batch, device), batch["text_tokens"].to(device),
                                     batch["text_token_lens"].to(device), batch["speech_tokens"].to(device),
                                     batch["speech_token_lens"].to(device))
    return loss_speech + text_weight * loss_text, loss_speech, loss_text


def target_tokens(batch: dict) -> int:
    """Speech tokens the loss predicts (each row's first token is input only)."""
    return int((batch["speech_token_lens"] - 1).sum())


@torch.no_grad()
def validate(t3, rows, pool, collator: T3Collator, cfg: TrainConfig, accelerator) -> float | None:
    """Token-weighted mean speech loss over the validation split, each row with a fixed other clip's voice."""
    if len(rows) == 0:
        return None
    t3.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(rows), cfg.batch_size):
            batch = collator(rows[i:i + cfg.batch_size], pool, step=i)
            with accelerator.autocast():
                _, loss_speech, _ = batch_loss(t3, batch, accelerator.device, 0.0)
            n = target_tokens(batch)
            total, count = total + float(loss_speech) * n, count + n
    finally:
        t3.train()
    return total / max(count, 1)


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


def save_checkpoint(run_dir: Path, step: int, peft_model, optimizer, scheduler, cfg: TrainConfig,
                    conds, data_info: dict, keep_last: int) -> Path:
    """Write step-<n>/ under a temporary name and rename it into place, then drop the oldest extra ones."""
    final = run_dir / f"step-{step}"
    tmp = run_dir / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp))
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_state(), "data": data_info}, tmp / STATE_FILE)
    (tmp / CONFIG_FILE).write_text(json.dumps(asdict(cfg), indent=1))
    conds.save(tmp / "conds.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in step_dirs(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def out_of_memory_help(cfg: TrainConfig) -> str:
    smaller = max(1, cfg.batch_size // 2)
    return (f"out of memory with batch_size {cfg.batch_size}: try --batch-size {smaller} --grad-accum "
            f"{cfg.grad_accum * cfg.batch_size // smaller} (same effective batch), --gradient-checkpointing, "
            "or --mixed-precision bf16")


# ------------------------------------------------------------------------------------------------ recipe

def train(cfg: TrainConfig, run_dir: Path, resume_from: Path | None = None, model=None) -> Path:
    """The whole recipe; returns the merged model folder.

    model: an already loaded ChatterboxTTS to fine-tune in place (its T3 is replaced by the merged one);
    by default `cfg.model` is loaded.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    accelerator = Accelerator(cpu=cfg.device == "cpu", mixed_precision=choose_precision(cfg))
    device = accelerator.device
    if model is None:
        model = load_chatterbox(cfg.model, cfg.multilingual, device)
    if model.is_preset:
        accelerator.print("NOTE: the tiny preset has random weights; its losses and output say nothing about speech")

    data = prepare_data(cfg, model, accelerator)
    train_rows, val_rows = data["train"], data["validation"]
    conds = model.prepare_conditionals(voice_clip(train_rows), exaggeration=cfg.exaggeration)
    model.s3gen.cpu(), model.ve.cpu()  # not needed until the export: free accelerator memory
    collator = T3Collator.for_model(model, seed=cfg.seed, emotion_adv=cfg.exaggeration)
    val_collator = T3Collator.for_model(model, seed=cfg.seed + 1, emotion_adv=cfg.exaggeration)

    # --- model: LoRA on the Llama projections, everything else frozen
    set_seed(cfg.seed)  # here, so the adapter's init and dropout do not depend on whether the data was cached
    if resume_from is not None:
        peft_model = load_adapter(model.t3, resume_from, trainable=True)
    else:
        peft_model = add_lora(model.t3, cfg.lora)
    t3 = model.t3  # peft injected its layers into this module in place
    if cfg.gradient_checkpointing:
        t3.tfmr.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
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
                 "seed": cfg.seed, "order": "numpy default_rng([seed, epoch]).permutation"}

    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    t3, optimizer = accelerator.prepare(t3, optimizer)

    step = 0
    if resume_from is not None:
        state = torch.load(resume_from / STATE_FILE, map_location="cpu", weights_only=False)
        if state["data"]["train_rows"] != len(train_rows) or state["data"]["steps_per_epoch"] != steps_per_epoch:
            raise TrainingError(f"the training data or batching changed since {resume_from} "
                                f"({state['data']['train_rows']} clips then, {len(train_rows)} now): "
                                "the run cannot be resumed exactly; start a new run")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step = state["step"]
        accelerator.print(f"resumed {run_dir.name} from {resume_from.name}")

    metrics = None
    if accelerator.is_main_process:
        metrics = MetricsLogger(run_dir, plot_every_seconds=cfg.plot_every_seconds,
                                resume=resume_from is not None, resume_step=step if resume_from else None)
    last_saved = resume_from
    bar = tqdm(total=total_steps, initial=step, desc="training", unit="step", disable=not accelerator.is_main_process)

    def checkpoint() -> None:
        nonlocal last_saved
        if accelerator.is_main_process:
            last_saved = save_checkpoint(run_dir, step, accelerator.unwrap_model(peft_model), optimizer, scheduler,
                                         cfg, conds, data_info, cfg.keep_last)
        accelerator.wait_for_everyone()

    def evaluate(epoch: int) -> None:
        val = validate(t3, val_rows, train_rows, val_collator, cfg, accelerator)
        if val is not None and metrics is not None:
            metrics.log_val(step, epoch, val)
            bar.set_postfix_str(f"{bar.postfix}, val {val:.3f}" if bar.postfix else f"val {val:.3f}")

    # --- the loop
    try:
        while step < total_steps:
            epoch, first = divmod(step, steps_per_epoch)
            steps = epoch_steps(len(train_rows), epoch, cfg, rank, world)
            for index in range(first, len(steps)):
                started = time.perf_counter()
                micro_batches = [collator(train_rows[ids], train_rows, step=epoch * 1_000_000 + index * 1000 + k)
                                 for k, ids in enumerate(steps[index])]
                n_targets = sum(target_tokens(b) for b in micro_batches)
                objective, speech_sum, tokens = 0.0, 0.0, 0
                for k, batch in enumerate(micro_batches):
                    weight = target_tokens(batch) / n_targets  # micro-batches count by their target tokens
                    sync = accelerator.no_sync(t3) if k < len(micro_batches) - 1 else _nullcontext()
                    with sync:
                        with accelerator.autocast():
                            loss, loss_speech, _ = batch_loss(t3, batch, device, cfg.text_loss_weight)
                        if not torch.isfinite(loss):
                            raise TrainingError(f"the loss became {float(loss.detach())} at step {step + 1}; stopped. "
                                                f"Last good checkpoint: {last_saved or 'none yet'} (resume it with "
                                                "--resume, perhaps with a lower --lr)")
                        accelerator.backward(loss * weight)
                    objective += float(loss.detach()) * weight
                    speech_sum += float(loss_speech.detach()) * weight
                    tokens += int(batch["text_token_lens"].sum() + batch["speech_token_lens"].sum())
                grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
                grad_norm = float(grad_norm)
                if not math.isfinite(grad_norm) and accelerator.mixed_precision != "fp16":
                    raise TrainingError(f"the gradient norm became {grad_norm} at step {step + 1}; stopped. "
                                        f"Last good checkpoint: {last_saved or 'none yet'}")
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1

                objective = _mean_over_processes(accelerator, objective)
                rate = tokens * world / (time.perf_counter() - started)
                if metrics is not None:
                    metrics.log_train(step, epoch, objective, lr=scheduler.get_last_lr()[0], grad_norm=grad_norm,
                                      tokens_per_s=rate, loss_speech=_mean_over_processes(accelerator, speech_sum))
                bar.update(1)
                bar.set_postfix(loss=f"{objective:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")

                epoch_done = index == len(steps) - 1
                if (cfg.eval_every and step % cfg.eval_every == 0) or epoch_done:
                    evaluate(epoch)
                if epoch_done and metrics is not None:
                    metrics.end_epoch(epoch, step)
                if epoch_done or step == total_steps or (cfg.save_every and step % cfg.save_every == 0):
                    checkpoint()
                if step == total_steps:
                    break
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

    # --- export: merged T3 + the unchanged rest, in the official layout
    merged_dir = run_dir / "merged"
    if accelerator.is_main_process:
        peft_model = accelerator.unwrap_model(peft_model)
        merged, diff = merge_verified(peft_model)
        model.t3 = merged.float().cpu()
        model.s3gen.cpu(), model.ve.cpu()
        model.conds = conds.to("cpu")
        tmp = run_dir / ".merged.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_local(tmp)
        # clips the adapter never trained on: `python -m evaluation` takes its reference voice from here
        heldout = [str(Path(p).resolve()) for p in val_rows["path"]]
        (tmp / HELDOUT_FILE).write_text(json.dumps({"heldout_clips": heldout}, indent=2) + "\n")
        shutil.rmtree(merged_dir, ignore_errors=True)
        os.replace(tmp, merged_dir)
        accelerator.print(f"merged logits match the adapter model's (max relative difference {diff:.1e})")
        accelerator.print(f"metrics plot: {run_dir / 'training_metrics.png'}")
        accelerator.print(f"merged model: {merged_dir}")
    accelerator.wait_for_everyone()
    return merged_dir


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _mean_over_processes(accelerator, value: float) -> float:
    if accelerator.num_processes == 1:
        return value
    return float(accelerator.reduce(torch.tensor(value, device=accelerator.device), reduction="mean"))


# --------------------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.lora", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="config file (default: ./config.toml, else the project's)")
    p.add_argument("--resume", action="store_true",
                   help="continue --run (default: the newest run in output_dir) from its last checkpoint")
    add_config_flags(p, TrainConfig)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "datasets", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg, run_dir, resume_from = resolve_config(args)
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"run: {run_dir}", file=sys.stderr)
        train(cfg, run_dir, resume_from)
    except (TrainingError, AdapterMismatch, CheckpointError, ValueError, FileNotFoundError,
            NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
