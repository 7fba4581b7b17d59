"""The LoRA recipe on the tiny preset and real espeak-ng speech (clips of the shipped sample): the loss falls,
a killed run resumes to the same adapter, the merged model loads and equals the adapter model, and bad input
stops with a message that says what to do."""
from __future__ import annotations

import errno
import json
import logging
import re
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from inference import ChatterboxMultilingualTTS, ChatterboxTTS
from inference.adapters import check_base, t3_fingerprint
from inference.chatterbox import load_chatterbox
from inference.presets import tiny_t3
from inference.settings import PROJECT_ROOT, config_keys, load_config
from training import lora
from inference.adapters import AdapterMismatch, load_adapter, probe_batch, probe_logits
from inference.audio import load_audio
from training.adapter import LoraSettings
from training.dataset import DatasetConfig
from training.ingest import ingest
from training.lora import TrainConfig, TrainingError, build_parser, epoch_steps, resolve_config, step_dirs, train
from training.metrics import load_metrics

SAMPLE = PROJECT_ROOT / "audio_data" / "espeak_sample"
MANIFEST = json.loads((PROJECT_ROOT / "tests" / "fixtures" / "espeak_sample.json").read_text())
SHORT = [f for f in MANIFEST["files"] if len(f["text"]) < 200][:8]
SPARE = [f for f in MANIFEST["files"] if len(f["text"]) < 200][8]
# what the bad entries of `audio` add to every run's ingest summary
BAD_ENTRIES = "skipped 3 files (broken link: 1, symlink loop: 1, unreadable transcript: 1)"


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """Eight short clips of the sample, with their true transcripts beside them (so Whisper is not needed), and
    the bad entries a user's folder collects, which every run here must skip (BAD_ENTRIES): a symlink loop, a
    dangling link and a clip whose transcript is binary."""
    folder = tmp_path_factory.mktemp("audio")
    for entry in SHORT:
        shutil.copy(SAMPLE / entry["file"], folder / entry["file"])
        (folder / entry["file"]).with_suffix(".txt").write_text(entry["text"])
    os.symlink("loop.wav", folder / "loop.wav")
    os.symlink("moved-away.wav", folder / "dangling.wav")
    shutil.copy(SAMPLE / SPARE["file"], folder / SPARE["file"])
    (folder / SPARE["file"]).with_suffix(".txt").write_bytes(b"\x9d\x00\xff\xfe binary")
    return folder


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    """One output folder for the module, so its runs share the dataset cache."""
    return tmp_path_factory.mktemp("checkpoints")


def fresh_model(english, t3=None):
    """A new tiny T3 (or `t3`) beside the session preset's S3Gen and VE (which training leaves untouched)."""
    return ChatterboxTTS(t3 or tiny_t3(), english.s3gen, english.ve, english.tokenizer, is_preset=True)


def config(audio: Path, output: Path, run: str, **overrides) -> TrainConfig:
    base = TrainConfig(audio_dir=str(audio), output_dir=str(output), run=run, device="cpu", epochs=2,
                       batch_size=2, warmup_steps=1, save_every=2, plot_every_seconds=0,
                       lora=LoraSettings(rank=4, alpha=8, dropout=0.1))
    return replace(base, **overrides)


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in load_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_loss_decreases_and_outputs_are_complete(audio, output, english, capsys):
    cfg = config(audio, output, "learn", epochs=8, lr=5e-3, save_every=0, export="both")
    run = output / "learn"
    merged = train(cfg, run, model=fresh_model(english))
    assert merged == run / "merged"
    assert f"audio: kept 8 clips from 8 files (0.8 min); {BAD_ENTRIES}" in capsys.readouterr().out

    losses = [loss for _, loss in train_losses(run)]
    assert len(losses) == 8 * 4  # 7 training clips (1 held out), batches of 2 -> 4 steps per epoch
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3, losses
    records = load_metrics(run / "metrics.jsonl")
    assert sum(r["kind"] == "val" for r in records) == 8 and sum(r["kind"] == "epoch" for r in records) == 8
    train_records = [r for r in records if r["kind"] == "train"]
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 for r in train_records)
    lrs = [r["lr"] for r in train_records]  # the lr each step used: 1 warmup step at 5e-3, then cosine towards 0
    assert lrs[0] == pytest.approx(5e-3) and lrs[1] == pytest.approx(5e-3)
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and 0 < lrs[-1] < 1e-4
    assert (run / "training_metrics.png").stat().st_size > 10_000

    # checkpoints: the last keep_last epoch ends, each a standard PEFT adapter with the full training state
    assert [p.name for p in step_dirs(run)] == ["step-24", "step-28", "step-32"]
    last = step_dirs(run)[-1]
    adapter_cfg = json.loads((last / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 4 and adapter_cfg["lora_alpha"] == 8 and adapter_cfg["peft_type"] == "LORA"
    assert adapter_cfg["base_model_name_or_path"] == "tiny"
    assert json.loads((last / "training_config.json").read_text())["lr"] == 5e-3
    base = json.loads((last / "chatterbox_base.json").read_text())
    assert base["model"] == "tiny" and base["family"] == "english" and base["t3_sha256"] == t3_fingerprint(tiny_t3())
    assert not list(run.glob(".*tmp"))

    # the adapter export: the final adapter, its voice, the held-out clips and a real model card
    adapter = run / "adapter"
    assert load_file(str(adapter / "adapter_model.safetensors")).keys() == \
        load_file(str(last / "adapter_model.safetensors")).keys()
    card = (adapter / "README.md").read_text()
    assert "More Information Needed" not in card and base["t3_sha256"] in card and "rank 4, alpha 8" in card
    assert "0.7 min in 7 clips" in card and "32 of 32" in card and "final validation loss" in card
    assert f"--model {adapter}" in card and "Synthetic base" in card

    # the merged folder is the official layout and loads like the official model; it equals the adapter model,
    # read with stock peft, and the adapter folder loaded by our loader
    assert (merged / "t3_cfg.safetensors").is_file() and (merged / "conds.pt").is_file()
    heldout = json.loads((merged / "heldout_clips.json").read_text())["heldout_clips"]
    assert len(heldout) == 1 and Path(heldout[0]).is_file()  # the one validation clip: evaluation's reference
    assert json.loads((adapter / "heldout_clips.json").read_text())["heldout_clips"] == heldout
    loaded = ChatterboxTTS.from_local(merged)
    from peft import PeftModel
    stock = PeftModel.from_pretrained(tiny_t3(), str(adapter)).get_base_model()
    probe = probe_batch(loaded.t3.cfg)
    torch.testing.assert_close(probe_logits(loaded.t3, probe), probe_logits(stock, probe), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(probe_logits(tiny_t3(), probe), probe_logits(stock, probe), atol=1e-3)
    via_adapter = load_chatterbox(adapter)
    torch.testing.assert_close(probe_logits(via_adapter.t3, probe), probe_logits(loaded.t3, probe), rtol=1e-4,
                               atol=1e-4)
    # the built-in voice is the training speaker's, not the preset's synthetic one
    assert not torch.equal(loaded.conds.t3.speaker_emb, english.conds.t3.speaker_emb.cpu())
    torch.testing.assert_close(via_adapter.conds.t3.speaker_emb, loaded.conds.t3.speaker_emb)


class Killed(Exception):
    pass


@pytest.mark.parametrize("precision", ["no", "fp16"])
def test_killed_run_resumes_to_the_same_adapter(audio, output, english, monkeypatch, precision):
    """fp16 too: the gradient scaler's state is checkpointed, and a step the scaler skips does not advance the
    learning-rate schedule, so the resumed run ends bit-identical to the uninterrupted one."""
    cfg = config(audio, output, f"straight-{precision}", mixed_precision=precision)
    train(cfg, output / cfg.run, model=fresh_model(english))

    real_log = lora.MetricsLogger.log_train

    def log_then_die(self, step, *args, **kwargs):
        real_log(self, step, *args, **kwargs)
        if step == 5:  # after step 4 was checkpointed, before step 6
            raise Killed()

    monkeypatch.setattr(lora.MetricsLogger, "log_train", log_then_die)
    broken = replace(cfg, run=f"interrupted-{precision}")
    with pytest.raises(Killed):
        train(broken, output / broken.run, model=fresh_model(english))
    assert step_dirs(output / broken.run)[-1].name == "step-4"
    monkeypatch.setattr(lora.MetricsLogger, "log_train", real_log)

    args = build_parser().parse_args(["--resume", "--run", broken.run, "--output-dir", str(output),
                                      "--audio-dir", str(audio)])
    resumed_cfg, run_dir, last = resolve_config(args)
    assert last.name == "step-4" and resumed_cfg.lora.rank == 4 and resumed_cfg.batch_size == 2
    assert resumed_cfg.mixed_precision == precision
    train(resumed_cfg, run_dir, last, model=fresh_model(english))

    a = load_file(str(output / cfg.run / "step-8" / "adapter_model.safetensors"))
    b = load_file(str(output / broken.run / "step-8" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and len(a) == 2 * 7 * 2
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert train_losses(output / broken.run) == train_losses(output / cfg.run)
    state_a = torch.load(output / cfg.run / "step-8" / "training_state.pt", weights_only=False)
    state_b = torch.load(output / broken.run / "step-8" / "training_state.pt", weights_only=False)
    assert state_a["scheduler"] == state_b["scheduler"] and state_a["scaler"] == state_b["scaler"]
    if precision == "fp16":  # the scaler really ran, and the schedule counts only the updates it made
        records = [r for r in load_metrics(output / cfg.run / "metrics.jsonl") if r["kind"] == "train"]
        skipped = sum(r["skipped"] for r in records)
        assert state_a["scaler"]["scale"] == 65536.0 * 0.5 ** skipped
        assert state_a["scheduler"]["last_epoch"] == 8 - skipped
        assert (output / cfg.run / "step-8" / "rng-0.pt").is_file()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_run_ends_with_a_verified_merge(audio, output, english, precision):
    """Autocast must not leak into the merge check: it compares float32 logits whatever the run used."""
    cfg = config(audio, output, f"amp-{precision}", mixed_precision=precision, max_steps=2, export="merged")
    merged = train(cfg, output / cfg.run, model=fresh_model(english))
    assert merged == output / cfg.run / "merged" and not (output / cfg.run / "adapter").exists()
    loaded = ChatterboxTTS.from_local(merged)
    adapted = load_adapter(tiny_t3(), step_dirs(output / cfg.run)[-1]).get_base_model()
    probe = probe_batch(loaded.t3.cfg)
    torch.testing.assert_close(probe_logits(loaded.t3, probe), probe_logits(adapted, probe), rtol=1e-5, atol=1e-5)
    assert f"| precision | {precision} |" in (merged / "README.md").read_text()


def test_two_processes_train_like_one(audio, output, english, tmp_path):
    """torchrun with 2 CPU processes (gloo): gradients flow through DDP's forward, only the main process
    writes, and the adapter equals one process's with the same global batch (2 x 2 accumulation)."""
    common = dict(epochs=1, warmup_steps=1, save_every=1)  # dropout on: drawn per micro-batch, so it matches too
    single = config(audio, output, "one-process", grad_accum=2, **common)
    train(single, output / single.run, model=fresh_model(english))

    out = tmp_path / "ddp"
    shutil.copytree(output / ".cache", out / ".cache")  # the same rows: the launch skips tokenizing
    # the README's multi-GPU command with --device cpu (`accelerate launch --cpu` would start ONE process)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "training.lora",
           "--model", "tiny", "--device", "cpu", "--audio-dir", str(audio), "--output-dir", str(out),
           "--epochs", "1", "--batch-size", "2", "--warmup-steps", "1", "--save-every", "1",
           "--lora.rank", "4", "--lora.alpha", "8", "--lora.dropout", "0.1", "--plot-every-seconds", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    runs = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1 and runs[0].name.startswith("lora-")  # both processes agreed on the run's name
    run = runs[0]
    assert "processes: 2" in done.stdout and done.stdout.count("adapter: ") == 1
    assert [p.name for p in step_dirs(run)] == ["step-1", "step-2"]  # 4 micro-batches of 2: 2 per process
    assert sorted(p.name for p in (run / "step-2").glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]
    steps = [r["step"] for r in load_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == [1, 2]  # logged once, by the main process
    assert (run / "training_metrics.png").is_file() and (run / "adapter" / "adapter_model.safetensors").is_file()

    one = load_file(str(output / single.run / "step-2" / "adapter_model.safetensors"))
    two = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert one.keys() == two.keys()
    # Adam divides by sqrt(v): where a gradient is near zero, the summation order of the all-reduce (against
    # accumulation in one process) shows as a small share of one step (lr 2e-4); 1e-5 is 5 % of a step.
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)
    assert any(one[key].abs().max() > 0 for key in one if "lora_A" in key)  # both steps changed something
    losses = [loss for _, loss in train_losses(output / single.run)]
    assert [loss for _, loss in train_losses(run)] == pytest.approx(losses, rel=1e-5)


def test_process_group_released_before_exit(tmp_path):
    """Left to interpreter exit, a gloo group can abort a run that succeeded (SIGABRT seen in CI): main()
    releases it first. A one-process group stands in for torchrun's here."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        total = torch.ones(3)
        dist.all_reduce(total)
        assert total.tolist() == [1.0, 1.0, 1.0]
        lora.release_processes()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    lora.release_processes()  # without a group: nothing to do


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

    # an English adapter onto the multilingual base: refused, saying so (it used to merge without a word)
    wrong = subprocess.run(cmd + ["--out", str(tmp_path / "x"), "--multilingual"], capture_output=True, text=True,
                           cwd=PROJECT_ROOT)
    assert wrong.returncode == 2 and "trained on the english model, this base is the multilingual one" in wrong.stderr
    # adapter_config.json edited by hand (alpha 8 -> 16) no longer agrees with the run that trained it
    edited = tmp_path / "edited"
    shutil.copytree(checkpoint, edited)
    adapter_cfg = json.loads((edited / "adapter_config.json").read_text())
    (edited / "adapter_config.json").write_text(json.dumps({**adapter_cfg, "lora_alpha": 16}))
    wrong = subprocess.run([*cmd[:4], str(edited), *cmd[5:], "--out", str(tmp_path / "x")], capture_output=True,
                           text=True, cwd=PROJECT_ROOT)
    assert wrong.returncode == 2 and "alpha: adapter_config.json says 16, training_config.json says 8" in wrong.stderr
    assert not (tmp_path / "x").exists()

    done = subprocess.run(cmd + ["--out", str(tmp_path / "merged"), "--rank", "4", "--alpha", "8"],
                          capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    assert "merged logits equal the adapter model's" in done.stdout
    assert (tmp_path / "merged" / "chatterbox_base.json").is_file() and (tmp_path / "merged" / "README.md").is_file()
    loaded = ChatterboxTTS.from_local(tmp_path / "merged")
    probe = probe_batch(loaded.t3.cfg)
    adapted = load_adapter(tiny_t3(), checkpoint).get_base_model()
    torch.testing.assert_close(probe_logits(loaded.t3, probe), probe_logits(adapted, probe), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loaded.conds.t3.speaker_emb,
                               torch.load(checkpoint / "conds.pt", weights_only=False)["t3"]["speaker_emb"])


def test_adapter_on_the_wrong_model_is_refused(short_run, english):
    from inference.models.t3 import T3, T3Config
    from inference.synthetic import fill_synthetic

    checkpoint = step_dirs(short_run)[-1]
    wider = replace(T3Config.tiny(), hidden_size=128, head_dim=32)
    with pytest.raises(AdapterMismatch, match="does not fit"):
        load_adapter(fill_synthetic(T3(wider, init_weights=False)), checkpoint)
    with pytest.raises(AdapterMismatch, match="T3 configurations differ .*hidden_size: adapter's base 64, this base 128"):
        check_base(checkpoint, fresh_model(english, fill_synthetic(T3(wider, init_weights=False))))
    other = tiny_t3()  # same configuration, other weights (say, another fine-tune merged into the base)
    with torch.no_grad():
        other.speech_head.weight.mul_(1.01)
    with pytest.raises(AdapterMismatch, match="T3 weights differ"):
        check_base(checkpoint, fresh_model(english, other))
    check_base(checkpoint, fresh_model(english))  # the base it was trained on passes


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

    monkeypatch.setattr(lora.SpeechObjective, "forward", no_memory)
    cfg = config(audio, output, "oom", batch_size=4)
    with pytest.raises(TrainingError, match=r"--batch-size 2 --grad-accum 2.*--gradient-checkpointing"):
        train(cfg, output / "oom", model=fresh_model(english))


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model is a test failure: these errors must come before it."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr(lora, "load_chatterbox", forbidden)


def test_no_usable_audio_is_a_clear_error(tmp_path, no_model_load):
    bad = tmp_path / "bad"
    bad.mkdir()
    import soundfile as sf
    sf.write(bad / "silence.wav", np.zeros(48000, dtype=np.float32), 24000)
    (bad / "corrupt.wav").write_bytes(b"RIFF not really a wave file")
    (bad / "notes.mp3").write_bytes(b"ID3")
    with pytest.raises(TrainingError, match=r"no usable audio.*skipped 3 files"):
        train(config(bad, tmp_path / "out", "y"), tmp_path / "out" / "y")
    assert not (tmp_path / "out" / "y").exists()


@pytest.mark.parametrize("clips", [1, 2])
def test_too_little_data_is_refused_before_any_model_loads(audio, tmp_path, no_model_load, clips):
    """One clip would condition on itself and leave nothing to validate on; two leave no validation clip."""
    few = tmp_path / "few"
    few.mkdir()
    for entry in SHORT[:clips]:
        shutil.copy(audio / entry["file"], few / entry["file"])
        shutil.copy((audio / entry["file"]).with_suffix(".txt"), few)
    with pytest.raises(TrainingError, match=rf"only {clips} usable clips \(0\.\d min of speech\); fine-tuning "
                                            r"needs at least 3: two to train on.*one held out for validation"):
        train(config(few, tmp_path / "out", "few"), tmp_path / "out" / "few")
    assert not (tmp_path / "out" / "few").exists()
    # without validation two clips are enough for the contract (each conditions on the other)
    if clips == 2:
        with pytest.raises(AssertionError, match="a model was loaded"):
            train(config(few, tmp_path / "out", "two", data=DatasetConfig(val_fraction=0.0)), tmp_path / "out" / "two")


def mount_tmpfs(folder: Path, options: str) -> bool:
    """Mount a tmpfs on `folder`; False where that is not allowed (not root, or a container without the right)."""
    mount = shutil.which("mount")
    if mount is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    done = subprocess.run([mount, "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can write to: read-only by permissions, or for root (whom permissions do not stop) a
    read-only tmpfs."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    mounted = os.access(folder, os.W_OK) and mount_tmpfs(folder, "ro,size=1m")
    if os.access(folder, os.W_OK) and not mounted:
        folder.chmod(0o755)
        pytest.skip("running as root, whom permissions do not stop, and no read-only tmpfs can be mounted here")
    yield folder
    if mounted:
        unmount(folder)
    folder.chmod(0o755)


def test_unwritable_output_folder_fails_in_seconds_before_the_model_loads(audio, read_only_folder, no_model_load,
                                                                          capsys):
    started = time.perf_counter()
    rc = lora.main(["--audio-dir", str(audio), "--output-dir", str(read_only_folder / "runs"), "--run", "x"])
    err = capsys.readouterr().err
    assert rc == 2 and time.perf_counter() - started < 10, err
    assert f"cannot write to the output folder {read_only_folder / 'runs' / 'x'} ({read_only_folder}: " in err
    assert "pick another with --output-dir" in err


def cli_args(audio: Path, output: Path, run: str) -> list[str]:
    """config()'s settings for a one-epoch run as flags of the command: 4 steps, checkpoints at 2 and 4."""
    return ["--device", "cpu", "--audio-dir", str(audio), "--output-dir", str(output), "--run", run, "--epochs", "1",
            "--batch-size", "2", "--warmup-steps", "1", "--save-every", "2", "--plot-every-seconds", "0",
            "--lora.rank", "4", "--lora.alpha", "8", "--lora.dropout", "0.1"]


def resume_as_told(err: str) -> int:
    """Run the resume command a failure message printed, as a user would paste it."""
    command = shlex.split(err.split("continue with: ", 1)[1].strip())
    assert command[:4] == ["python", "-m", "training.lora", "--resume"], command
    return lora.main(command[3:])


def assert_stopped_after_step_2(run: Path, rc: int, err: str) -> None:
    assert rc == 2, err
    assert f"Last good checkpoint: {run / 'step-2'}. Free some space, then continue with: python -m training.lora " \
           f"--resume --run {run.name} --output-dir {run.parent}" in err
    assert re.search(r"\d+\.\d MB free on the disk holding ", err)
    assert [p.name for p in step_dirs(run)] == ["step-2"] and not list(run.glob(".step-*"))  # nothing half-written


def test_failed_checkpoint_write_is_removed_and_the_last_good_one_resumes(audio, output, english, monkeypatch,
                                                                         capsys, caplog):
    """A full disk as safetensors reports it (SafetensorError, not OSError) while the second checkpoint is
    written; the real thing is test_full_disk_stops_cleanly_and_resumes."""
    import peft.peft_model
    from safetensors import SafetensorError

    real_save = peft.peft_model.safe_save_file

    def disk_full_at_step_4(tensors, filename, *args, **kwargs):
        if ".step-4.tmp" in str(filename):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(peft.peft_model, "safe_save_file", disk_full_at_step_4)
    monkeypatch.setattr(lora, "load_chatterbox", lambda *args, **kwargs: fresh_model(english))
    run = output / "disk-full"
    with caplog.at_level(logging.WARNING):
        rc = lora.main(cli_args(audio, output, run.name))
    err = capsys.readouterr().err
    assert_stopped_after_step_2(run, rc, err)
    assert f"error: stopped at step 4: could not write checkpoint {run / 'step-4'} (Error while serializing: I/O " \
           "error: No space left on device (os error 28))" in err
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"

    monkeypatch.setattr(peft.peft_model, "safe_save_file", real_save)
    assert resume_as_told(err) == 0, capsys.readouterr().err
    assert [p.name for p in step_dirs(run)] == ["step-2", "step-4"] and (run / "adapter").is_dir()
    assert [r["step"] for r in load_metrics(run / "metrics.jsonl") if r["kind"] == "train"] == [1, 2, 3, 4]


def fill(path: Path) -> None:
    """Write `path` until its disk is full, to the last byte."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e


def test_full_disk_stops_cleanly_and_resumes(audio, output, english, tmp_path, monkeypatch, capsys, caplog):
    """A real full disk (a tmpfs filled up after step 2 was saved): one message naming step-2 and the command
    that resumes it, the half-written step-4 removed, no traceback; after space is freed the command works."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not mount_tmpfs(disk, "size=128m"):
        pytest.skip("cannot mount a tmpfs here (needs root and the right to mount); the simulated failure in "
                    "test_failed_checkpoint_write_is_removed_and_the_last_good_one_resumes stands in")
    try:
        if (output / ".cache").is_dir():
            shutil.copytree(output / ".cache", disk / ".cache")  # the same rows: no tokenizing
        real_log = lora.MetricsLogger.log_train

        def fill_after_step_3(self, step, *args, **kwargs):
            real_log(self, step, *args, **kwargs)
            if step == 3:
                fill(disk / "filler")

        monkeypatch.setattr(lora.MetricsLogger, "log_train", fill_after_step_3)
        monkeypatch.setattr(lora, "load_chatterbox", lambda *args, **kwargs: fresh_model(english))
        run = disk / "full"
        with caplog.at_level(logging.WARNING):
            rc = lora.main(cli_args(audio, disk, run.name))
        err = capsys.readouterr().err
        assert_stopped_after_step_2(run, rc, err)
        assert "error: stopped at step 4: " in err
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
        assert len([r for r in caplog.records if "could not write" in r.getMessage()]) <= 1  # the plot, once

        monkeypatch.setattr(lora.MetricsLogger, "log_train", real_log)
        (disk / "filler").unlink()
        assert resume_as_told(err) == 0, capsys.readouterr().err
        assert [p.name for p in step_dirs(run)] == ["step-2", "step-4"] and (run / "adapter").is_dir()
    finally:
        unmount(disk)


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_bad_audio_folder_fails_in_seconds_and_leaves_nothing(tmp_path, no_model_load, capsys, folder):
    audio = tmp_path / folder
    if folder == "empty":
        audio.mkdir()
        (audio / "notes.txt").write_text("not audio")
    rc = lora.main(["--audio-dir", str(audio), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert ("audio folder not found" in err) if folder == "missing" else ("holds no recordings" in err)
    assert not (tmp_path / "out").exists()


def test_multilingual_run_writes_the_multilingual_layout(audio, output, multilingual):
    model = ChatterboxMultilingualTTS(tiny_t3(True), multilingual.s3gen, multilingual.ve, multilingual.tokenizer,
                                      is_preset=True)
    # also the memory-saving paths: gradient checkpointing and accumulation over micro-batches of one clip
    cfg = config(audio, output, "mtl", epochs=1, multilingual=True, gradient_checkpointing=True, batch_size=1,
                 grad_accum=3)
    with pytest.raises(TrainingError, match="language"):
        train(cfg, output / "mtl", model=model)
    cfg = replace(cfg, data=replace(cfg.data, language="en"), export="merged")
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
        assert lora.command_overrides(args) == [f"{key}={raw}"]
    args = parser.parse_args(["--epochs", "1", "--lora.rank", "8", "--lora.targets", "q_proj,v_proj",
                              "--data.val-fraction", "0.1", "--gradient-checkpointing"])
    cfg = load_config(TrainConfig, "training", PROJECT_ROOT / "config.toml", lora.command_overrides(args))
    assert (cfg.epochs, cfg.lora.rank, cfg.lora.targets, cfg.data.val_fraction, cfg.gradient_checkpointing) == \
        (1, 8, ("q_proj", "v_proj"), 0.1, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--no-such-flag", "1"])
    with pytest.raises(ValueError, match="lora targets"):
        load_config(TrainConfig, "training", PROJECT_ROOT / "config.toml", ["lora.targets=q_proj,to_q"])
    with pytest.raises(ValueError, match="epochs"):
        load_config(TrainConfig, "training", PROJECT_ROOT / "config.toml", ["epochs=0"])
    with pytest.raises(ValueError, match="export must be one of adapter, merged, both"):
        load_config(TrainConfig, "training", PROJECT_ROOT / "config.toml", ["export=lora"])


def test_help_explains_every_flag_from_config_toml():
    """--help shows each key's comment in config.toml (one text for both) and its default."""
    from inference.settings import config_comments

    comments = config_comments("training")
    assert set(comments) == set(config_keys(TrainConfig))
    helps = {a.dest[4:]: a.help for a in build_parser()._actions if a.dest.startswith("cfg:")}
    for key, text in comments.items():
        assert len(text) > 10, f"{key} has no explanation in config.toml"
        assert helps[key].replace("%%", "%").startswith(text) and "(default: " in helps[key], key
    assert "seconds" in comments["plot_every_seconds"] and "optimizer steps" in comments["save_every"]
    assert helps["lora.rank"].endswith("(default: 16)") and "adapter" in helps["export"]
    shown = subprocess.run([sys.executable, "-m", "training.lora", "--help"], capture_output=True, text=True,
                           cwd=PROJECT_ROOT)
    assert shown.returncode == 0 and "clip the gradient's L2 norm" in " ".join(shown.stdout.split())


def test_heldout_file_names_the_users_recording_of_a_corrected_clip(tmp_path):
    """A clip whose DC offset ingest removed is trained from a centred copy in the cache; heldout_clips.json names
    that copy and the user's recording behind it, where evaluation finds its transcript."""
    audio = tmp_path / "audio_data"
    audio.mkdir()
    shutil.copy(SAMPLE / SHORT[0]["file"], audio / "clean.flac")
    wav = load_audio(SAMPLE / SHORT[1]["file"], 24000)
    sf.write(audio / "offset.wav", wav + 0.3, 24000, subtype="FLOAT")
    clips = ingest(audio, tmp_path / "cache").clips
    copied = next(c for c in clips if c.source.name == "offset.wav")
    assert copied.path != copied.source  # the centred copy
    record = lora.heldout_record([str(c.path) for c in clips], clips)
    assert record["heldout_clips"] == [str(Path(c.path).resolve()) for c in clips]
    assert record["originals"] == {str(copied.path.resolve()): str((audio / "offset.wav").resolve())}


def test_epoch_order_is_deterministic_and_complete():
    cfg = TrainConfig(batch_size=3, grad_accum=2, seed=7)
    steps = epoch_steps(20, 0, cfg)
    rows = [i for step in steps for _, batch in step for i in batch]
    assert sorted(rows) == list(range(20)) and len(steps) == 4  # 7 micro-batches -> 4 steps, the last has one
    assert [m for step in steps for m, _ in step] == list(range(7))
    assert epoch_steps(20, 0, cfg) == steps and epoch_steps(20, 1, cfg) != steps
    shards = [epoch_steps(20, 0, cfg, rank=r, world=2) for r in range(2)]
    seen = [i for shard in shards for step in shard for _, batch in step for i in batch]
    assert len(seen) == len(set(seen)) == 18 and len(shards[0]) == len(shards[1])  # 6 of 7 micro-batches used
    # step s of two processes holds the same micro-batches as step s of one process with twice the accumulation
    one = epoch_steps(20, 0, replace(cfg, grad_accum=4))
    for s, step in enumerate(one):
        assert sorted(m for shard in shards for m, _ in shard[s]) == sorted(m for m, _ in step if m < 6)


def test_main_command_on_the_shipped_sample(tmp_path, capsys, caplog):
    """The README's main command, as a newcomer runs it (Whisper transcribes the sample), into a temp folder; then
    what a user does with its adapter (the tts command, here in this process: its subprocess path is tested in
    tests/inference/test_synthesis.py)."""
    from inference import tts

    done = subprocess.run([sys.executable, "-m", "training.lora", "--output-dir", str(tmp_path), "--run", "demo",
                           "--epochs", "1"], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "demo"
    assert f"adapter: {run / 'adapter'}" in done.stdout and not (run / "merged").exists()  # export = "adapter"
    assert "kept 20 clips from 18 files" in done.stdout and re.search(r"WARNING: [23]\.\d min of usable speech", done.stdout)
    assert (run / "training_metrics.png").is_file() and (run / "adapter" / "adapter_model.safetensors").is_file()
    # the adapter is usable as it is, without merging: as a model, and on its base with --adapter
    for how in (["--model", str(run / "adapter")], ["--model", "tiny", "--adapter", str(run / "adapter")]):
        caplog.clear()
        with caplog.at_level("INFO", logger="inference.adapters"):
            code = tts.main([*how, "--text", "Hello.", "--out", str(tmp_path / "hello.wav"), "max_new_tokens=10"])
        assert code == 0, capsys.readouterr().err[-2000:]
        assert "applied the LoRA adapter" in caplog.text and (tmp_path / "hello.wav").stat().st_size > 1000
    capsys.readouterr()
    code = tts.main(["--model", "tiny-multilingual", "--adapter", str(run / "adapter"), "--text", "Hello.", "--out",
                     str(tmp_path / "x.wav")])
    assert code == 2 and "english model, this base is the multilingual one" in capsys.readouterr().err
    cache = json.loads((tmp_path / ".cache" / "transcripts" / "transcripts.json").read_text())
    assert len(cache["entries"]) == 20
    # a second run of the same command reuses the transcripts and the dataset, and refuses to reuse the run name
    assert lora.main(["--output-dir", str(tmp_path), "--run", "demo"]) == 2
    assert "--resume" in capsys.readouterr().err
