"""The LoRA recipe on the tiny preset and real espeak-ng speech (clips of the shipped sample): the loss falls,
a killed run resumes to the same adapter, the merged model loads and equals the adapter model, and bad input
stops with a message that says what to do."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from inference import ChatterboxMultilingualTTS, ChatterboxTTS
from inference.presets import tiny_t3
from inference.settings import PROJECT_ROOT, config_keys, load_config
from training import lora
from training.adapter import AdapterMismatch, LoraSettings, load_adapter, probe_batch, probe_logits
from training.lora import TrainConfig, TrainingError, build_parser, epoch_steps, resolve_config, step_dirs, train
from training.metrics import load_metrics

SAMPLE = PROJECT_ROOT / "audio_data" / "espeak_sample"
MANIFEST = json.loads((PROJECT_ROOT / "tests" / "fixtures" / "espeak_sample.json").read_text())
SHORT = [f for f in MANIFEST["files"] if len(f["text"]) < 200][:8]


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """Eight short clips of the sample, with their true transcripts beside them (so Whisper is not needed)."""
    folder = tmp_path_factory.mktemp("audio")
    for entry in SHORT:
        shutil.copy(SAMPLE / entry["file"], folder / entry["file"])
        (folder / entry["file"]).with_suffix(".txt").write_text(entry["text"])
    return folder


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    """One output folder for the module, so its runs share the dataset cache."""
    return tmp_path_factory.mktemp("checkpoints")


def fresh_model(english):
    """A new tiny T3 beside the session preset's S3Gen and VE (which training leaves untouched)."""
    return ChatterboxTTS(tiny_t3(), english.s3gen, english.ve, english.tokenizer, is_preset=True)


def config(audio: Path, output: Path, run: str, **overrides) -> TrainConfig:
    base = TrainConfig(audio_dir=str(audio), output_dir=str(output), run=run, device="cpu", epochs=2,
                       batch_size=2, warmup_steps=1, save_every=2, plot_every_seconds=0,
                       lora=LoraSettings(rank=4, alpha=8, dropout=0.1))
    return replace(base, **overrides)


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in load_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_loss_decreases_and_outputs_are_complete(audio, output, english):
    cfg = config(audio, output, "learn", epochs=8, lr=5e-3, save_every=0)
    run = output / "learn"
    merged = train(cfg, run, model=fresh_model(english))

    losses = [loss for _, loss in train_losses(run)]
    assert len(losses) == 8 * 4  # 7 training clips (1 held out), batches of 2 -> 4 steps per epoch
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3, losses
    records = load_metrics(run / "metrics.jsonl")
    assert sum(r["kind"] == "val" for r in records) == 8 and sum(r["kind"] == "epoch" for r in records) == 8
    train_records = [r for r in records if r["kind"] == "train"]
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 for r in train_records)
    lrs = [r["lr"] for r in train_records]  # 1 warmup step to 5e-3, then cosine down to 0
    assert lrs[0] == pytest.approx(5e-3) and all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 1e-4
    assert (run / "training_metrics.png").stat().st_size > 10_000

    # checkpoints: the last keep_last epoch ends, each a standard PEFT adapter with the full training state
    assert [p.name for p in step_dirs(run)] == ["step-24", "step-28", "step-32"]
    last = step_dirs(run)[-1]
    adapter_cfg = json.loads((last / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 4 and adapter_cfg["lora_alpha"] == 8 and adapter_cfg["peft_type"] == "LORA"
    assert json.loads((last / "training_config.json").read_text())["lr"] == 5e-3
    assert not list(run.glob(".*tmp"))

    # the merged folder is the official layout and loads like the official model; it equals the adapter model
    assert (merged / "t3_cfg.safetensors").is_file() and (merged / "conds.pt").is_file()
    heldout = json.loads((merged / "heldout_clips.json").read_text())["heldout_clips"]
    assert len(heldout) == 1 and Path(heldout[0]).is_file()  # the one validation clip: evaluation's reference
    loaded = ChatterboxTTS.from_local(merged)
    adapted = load_adapter(tiny_t3(), last).get_base_model()
    probe = probe_batch(loaded.t3.cfg)
    torch.testing.assert_close(probe_logits(loaded.t3, probe), probe_logits(adapted, probe), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(probe_logits(tiny_t3(), probe), probe_logits(adapted, probe), atol=1e-3)
    # the built-in voice is the training speaker's, not the preset's synthetic one
    assert not torch.equal(loaded.conds.t3.speaker_emb, english.conds.t3.speaker_emb.cpu())


def test_killed_run_resumes_to_the_same_adapter(audio, output, english, monkeypatch):
    cfg = config(audio, output, "straight")
    train(cfg, output / "straight", model=fresh_model(english))

    class Killed(Exception):
        pass

    real_log = lora.MetricsLogger.log_train

    def log_then_die(self, step, *args, **kwargs):
        real_log(self, step, *args, **kwargs)
        if step == 5:  # after step 4 was checkpointed, before step 6
            raise Killed()

    monkeypatch.setattr(lora.MetricsLogger, "log_train", log_then_die)
    broken = replace(cfg, run="interrupted")
    with pytest.raises(Killed):
        train(broken, output / "interrupted", model=fresh_model(english))
    assert step_dirs(output / "interrupted")[-1].name == "step-4"
    monkeypatch.setattr(lora.MetricsLogger, "log_train", real_log)

    args = build_parser().parse_args(["--resume", "--run", "interrupted", "--output-dir", str(output),
                                      "--audio-dir", str(audio)])
    resumed_cfg, run_dir, last = resolve_config(args)
    assert last.name == "step-4" and resumed_cfg.lora.rank == 4 and resumed_cfg.batch_size == 2
    train(resumed_cfg, run_dir, last, model=fresh_model(english))

    a = load_file(str(output / "straight" / "step-8" / "adapter_model.safetensors"))
    b = load_file(str(output / "interrupted" / "step-8" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and len(a) == 2 * 7 * 2
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert train_losses(output / "interrupted") == train_losses(output / "straight")
    state_a = torch.load(output / "straight" / "step-8" / "training_state.pt", weights_only=False)
    state_b = torch.load(output / "interrupted" / "step-8" / "training_state.pt", weights_only=False)
    assert state_a["scheduler"] == state_b["scheduler"]


@pytest.fixture(scope="module")
def short_run(audio, output, english) -> Path:
    """A finished one-epoch run (rank 4, alpha 8)."""
    train(config(audio, output, "short", epochs=1), output / "short", model=fresh_model(english))
    return output / "short"


def test_resume_refuses_another_rank(short_run, output):
    args = build_parser().parse_args(["--resume", "--run", "short", "--output-dir", str(output), "--lora.rank", "8"])
    with pytest.raises(AdapterMismatch, match="rank 8.*rank 4"):
        resolve_config(args)
    args = build_parser().parse_args(["--resume", "--run", "short", "--output-dir", str(output), "--lora.alpha", "3"])
    with pytest.raises(AdapterMismatch, match="alpha 3.*alpha 8"):
        resolve_config(args)
    # without --resume the existing run is never overwritten
    with pytest.raises(TrainingError, match="--resume"):
        resolve_config(build_parser().parse_args(["--run", "short", "--output-dir", str(output)]))


def test_merge_command(short_run, tmp_path):
    checkpoint = step_dirs(short_run)[-1]
    cmd = [sys.executable, "-m", "training.merge", "--checkpoint", str(checkpoint), "--base", "tiny"]
    wrong = subprocess.run(cmd + ["--out", str(tmp_path / "x"), "--rank", "16"], capture_output=True, text=True,
                           cwd=PROJECT_ROOT)
    assert wrong.returncode != 0 and "rank 16" in wrong.stderr and "rank 4" in wrong.stderr
    wrong = subprocess.run(cmd + ["--out", str(tmp_path / "x"), "--alpha", "16"], capture_output=True, text=True,
                           cwd=PROJECT_ROOT)
    assert wrong.returncode != 0 and "alpha 16" in wrong.stderr and "alpha 8" in wrong.stderr
    assert not (tmp_path / "x").exists()

    done = subprocess.run(cmd + ["--out", str(tmp_path / "merged"), "--rank", "4", "--alpha", "8"],
                          capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    assert "merged logits equal the adapter model's" in done.stdout
    loaded = ChatterboxTTS.from_local(tmp_path / "merged")
    probe = probe_batch(loaded.t3.cfg)
    adapted = load_adapter(tiny_t3(), checkpoint).get_base_model()
    torch.testing.assert_close(probe_logits(loaded.t3, probe), probe_logits(adapted, probe), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loaded.conds.t3.speaker_emb,
                               torch.load(checkpoint / "conds.pt", weights_only=False)["t3"]["speaker_emb"])


def test_adapter_on_the_wrong_model_is_refused(short_run):
    from inference.models.t3 import T3, T3Config
    from inference.synthetic import fill_synthetic

    wider = replace(T3Config.tiny(), hidden_size=128, head_dim=32)
    with pytest.raises(AdapterMismatch, match="does not fit"):
        load_adapter(fill_synthetic(T3(wider, init_weights=False)), step_dirs(short_run)[-1])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(audio, output, english):
    cfg = config(audio, output, "diverge", lr=1e30, max_grad_norm=0, save_every=1, warmup_steps=0,
                 schedule="constant")
    with pytest.raises(TrainingError, match=r"(loss|gradient norm) became (nan|inf).*Last good checkpoint: .*step-1"):
        train(cfg, output / "diverge", model=fresh_model(english))
    good = load_file(str(output / "diverge" / "step-1" / "adapter_model.safetensors"))
    assert all(torch.isfinite(t).all() for t in good.values())


def test_out_of_memory_suggests_smaller_batches(audio, output, english, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(lora, "batch_loss", no_memory)
    cfg = config(audio, output, "oom", batch_size=4)
    with pytest.raises(TrainingError, match=r"--batch-size 2 --grad-accum 2.*--gradient-checkpointing"):
        train(cfg, output / "oom", model=fresh_model(english))


def test_no_usable_audio_is_a_clear_error(tmp_path, english):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainingError, match="no usable audio"):
        train(config(empty, tmp_path / "out", "x"), tmp_path / "out" / "x", model=fresh_model(english))

    bad = tmp_path / "bad"
    bad.mkdir()
    import soundfile as sf
    sf.write(bad / "silence.wav", np.zeros(48000, dtype=np.float32), 24000)
    (bad / "corrupt.wav").write_bytes(b"RIFF not really a wave file")
    (bad / "notes.mp3").write_bytes(b"ID3")
    with pytest.raises(TrainingError, match=r"no usable audio.*skipped 3 files"):
        train(config(bad, tmp_path / "out", "y"), tmp_path / "out" / "y", model=fresh_model(english))


def test_multilingual_run_writes_the_multilingual_layout(audio, output, multilingual):
    model = ChatterboxMultilingualTTS(tiny_t3(True), multilingual.s3gen, multilingual.ve, multilingual.tokenizer,
                                      is_preset=True)
    # also the memory-saving paths: gradient checkpointing and accumulation over micro-batches of one clip
    cfg = config(audio, output, "mtl", epochs=1, multilingual=True, gradient_checkpointing=True, batch_size=1,
                 grad_accum=3)
    with pytest.raises(TrainingError, match="language"):
        train(cfg, output / "mtl", model=model)
    cfg = replace(cfg, data=replace(cfg.data, language="en"))
    merged = train(cfg, output / "mtl", model=model)
    assert (merged / "t3_mtl23ls_v2.safetensors").is_file() and not (merged / "t3_cfg.safetensors").exists()
    assert ChatterboxMultilingualTTS.from_local(merged).t3.cfg.is_multilingual
    assert [r["step"] for r in load_metrics(output / "mtl" / "metrics.jsonl") if r["kind"] == "train"] == [1, 2, 3]


# ------------------------------------------------------------------------------------------ config and CLI

def test_every_config_key_is_a_flag():
    parser = build_parser()
    shipped = load_config(TrainConfig, "training", PROJECT_ROOT / "config.toml")
    for key in config_keys(TrainConfig):
        value = shipped
        for part in key.split("."):
            value = getattr(value, part)
        raw = ",".join(value) if isinstance(value, tuple) else ("" if value is None else str(value))
        args = parser.parse_args([f"--{key.replace('_', '-')}", raw])
        assert lora.flag_overrides(args) == [f"{key}={raw}"]
    args = parser.parse_args(["--epochs", "1", "--lora.rank", "8", "--lora.targets", "q_proj,v_proj",
                              "--data.val-fraction", "0.1", "--gradient-checkpointing"])
    cfg = load_config(TrainConfig, "training", PROJECT_ROOT / "config.toml", lora.flag_overrides(args))
    assert (cfg.epochs, cfg.lora.rank, cfg.lora.targets, cfg.data.val_fraction, cfg.gradient_checkpointing) == \
        (1, 8, ("q_proj", "v_proj"), 0.1, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--no-such-flag", "1"])
    with pytest.raises(ValueError, match="lora targets"):
        load_config(TrainConfig, "training", PROJECT_ROOT / "config.toml", ["lora.targets=q_proj,to_q"])
    with pytest.raises(ValueError, match="epochs"):
        load_config(TrainConfig, "training", PROJECT_ROOT / "config.toml", ["epochs=0"])


def test_epoch_order_is_deterministic_and_complete():
    cfg = TrainConfig(batch_size=3, grad_accum=2, seed=7)
    steps = epoch_steps(20, 0, cfg)
    rows = [i for step in steps for batch in step for i in batch]
    assert sorted(rows) == list(range(20)) and len(steps) == 4  # 7 micro-batches -> 4 steps, the last has one
    assert epoch_steps(20, 0, cfg) == steps and epoch_steps(20, 1, cfg) != steps
    shards = [epoch_steps(20, 0, cfg, rank=r, world=2) for r in range(2)]
    seen = [i for shard in shards for step in shard for batch in step for i in batch]
    assert len(seen) == len(set(seen)) == 18 and len(shards[0]) == len(shards[1])  # 6 of 7 micro-batches used


def test_main_command_on_the_shipped_sample(tmp_path):
    """The README's main command, as a newcomer runs it (Whisper transcribes the sample), into a temp folder."""
    done = subprocess.run([sys.executable, "-m", "training.lora", "--output-dir", str(tmp_path), "--run", "demo",
                           "--epochs", "1"], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "demo"
    assert f"merged model: {run / 'merged'}" in done.stdout
    assert "kept 20 clips from 18 files" in done.stdout
    assert (run / "training_metrics.png").is_file() and (run / "merged" / "t3_cfg.safetensors").is_file()
    cache = json.loads((tmp_path / ".cache" / "transcripts" / "transcripts.json").read_text())
    assert len(cache["entries"]) == 20
    # a second run of the same command reuses the transcripts and the dataset, and refuses to reuse the run name
    again = subprocess.run([sys.executable, "-m", "training.lora", "--output-dir", str(tmp_path), "--run", "demo"],
                           capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr
