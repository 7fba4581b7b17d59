"""Fine-tuning Turbo/Nano's GPT-2 T3: training shows the model exactly what synthesis feeds it, the recipe runs on
the tiny Turbo preset (bf16, torchrun), its LoRA on GPT-2's transposed Conv1D layers merges to the same logits,
stock peft reads it, and an adapter is refused on another family with the reason."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from inference.adapters import AdapterMismatch, load_adapter, probe_batch, probe_logits
from inference.chatterbox import ChatterboxNanoTTS, ChatterboxTurboTTS, load_chatterbox
from inference.families import TURBO
from inference.loading import family_for
from inference.models.t3 import T3Cond
from inference.settings import PROJECT_ROOT
from training.adapter import LoraSettings
from training.dataset import T3Collator
from training.lora import TrainConfig, TrainingError, step_dirs, train
from training.metrics import load_metrics

SAMPLE = PROJECT_ROOT / "audio_data" / "espeak_sample"
MANIFEST = json.loads((PROJECT_ROOT / "tests" / "fixtures" / "espeak_sample.json").read_text())
SHORT = [f for f in MANIFEST["files"] if len(f["text"]) < 200][:6]


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in load_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_teacher_forcing_equals_incremental_decoding(turbo):
    """Training's packed teacher forcing of [conditioning, BPE text (no start/stop text tokens, as
    inference_turbo feeds it), start-speech, speech..., stop-speech] gives, at every speech position, the logits
    that incremental decoding (voice prefix cache, one token at a time) gives for the same tokens; and the loss
    is the cross-entropy of exactly those logits against the next token."""
    t3 = turbo.t3
    g = torch.Generator().manual_seed(3)
    texts = [turbo.text_tokens("Hello there, how are you today?")[0], turbo.text_tokens("Fine.")[0]]
    assert all(int(t[0]) != t3.cfg.start_text_token for t in texts)  # GPT-2 T3 takes the BPE ids alone
    n = [12, 7]
    speech = [torch.randint(0, 6561, (k,), generator=g) for k in n]
    cond = T3Cond(speaker_emb=torch.randn(2, 256, generator=g),
                  cond_prompt_speech_tokens=torch.randint(0, 6561, (2, 40), generator=g),
                  emotion_adv=torch.zeros(2, 1, 1))
    rows = [{"path": f"r{i}", "text_tokens": texts[i].tolist(),
             "speech_tokens": [t3.cfg.start_speech_token, *speech[i].tolist(), t3.cfg.stop_speech_token]}
            for i in range(2)]
    batch = T3Collator.for_model(turbo)(rows, [{"path": "p", "duration": 6.0, "speaker_emb": [0.0] * 256,
                                                "prompt_tokens": [1] * 40}])
    with torch.no_grad():
        out = t3(cond, batch["text_tokens"], batch["text_token_lens"], batch["speech_tokens"],
                 batch["speech_token_lens"], packed=True)
        loss_text, loss_speech = t3.loss(cond, batch["text_tokens"], batch["text_token_lens"], batch["speech_tokens"],
                                         batch["speech_token_lens"])
    sampling = replace(TURBO.sampling, max_new_tokens=max(n) + 1)
    expected_loss, count = 0.0, 0
    for i in range(2):
        own = T3Cond(speaker_emb=cond.speaker_emb[i:i + 1], cond_prompt_speech_tokens=cond.cond_prompt_speech_tokens[i:i + 1],
                     emotion_adv=cond.emotion_adv[i:i + 1])
        feed = iter([*speech[i].tolist(), t3.cfg.stop_speech_token])
        steps = []
        with torch.no_grad():
            made = list(t3.generate_tokens(own, texts[i], sampling, choose=lambda probs: next(feed),
                                           on_step=lambda trace: steps.append(trace.step_logits[0])))
        assert made == [*speech[i].tolist(), t3.cfg.stop_speech_token]
        incremental = torch.stack(steps)  # logits before each of the n + 1 tokens
        teacher = out.speech_logits[i, :n[i] + 1]
        torch.testing.assert_close(teacher, incremental, rtol=1e-4, atol=1e-4)
        targets = torch.tensor(made)
        expected_loss += float(torch.nn.functional.cross_entropy(teacher, targets, reduction="sum"))
        count += len(made)
    assert float(loss_speech) == pytest.approx(expected_loss / count, rel=1e-5)


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """The sample's short clips with their transcripts, plus two longer ones: Turbo conditions rows only on clips
    longer than 5 s, as it takes only such voices."""
    folder = tmp_path_factory.mktemp("turbo-audio")
    for entry in SHORT:
        shutil.copy(SAMPLE / entry["file"], folder / entry["file"])
        (folder / entry["file"]).with_suffix(".txt").write_text(entry["text"])
    return folder


@pytest.fixture(scope="module")
def bf16_run(audio, tmp_path_factory, turbo) -> Path:
    """A short bf16 Turbo run with gradient checkpointing (GPT-2 T3 has no token table for transformers' input
    hook), exported as adapter and merged model."""
    output = tmp_path_factory.mktemp("turbo-runs")
    model = ChatterboxTurboTTS(turbo.t3.__class__(turbo.t3.cfg, init_weights=False), turbo.s3gen, turbo.ve,
                               turbo.tokenizer, is_preset=True)
    model.t3.load_state_dict(turbo.t3.state_dict())
    cfg = TrainConfig(model="tiny-turbo", audio_dir=str(audio), output_dir=str(output), run="bf16", device="cpu",
                      epochs=3, batch_size=2, lr=5e-3, warmup_steps=1, save_every=0, plot_every_seconds=0,
                      mixed_precision="bf16", gradient_checkpointing=True, export="both",
                      lora=LoraSettings(rank=4, alpha=8, dropout=0.0))
    train(cfg, output / "bf16", model=model)
    return output / "bf16"


def test_bf16_turbo_run_merges_to_the_adapter_models_logits(bf16_run, turbo):
    losses = [loss for _, loss in train_losses(bf16_run)]
    assert len(losses) == 9 and min(losses[-3:]) < losses[0] - 0.3  # 5 training clips, batches of 2: 3 steps per epoch
    adapter_cfg = json.loads((bf16_run / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter_cfg["target_modules"]) == ["c_attn", "c_fc", "c_proj"] and adapter_cfg["fan_in_fan_out"]
    base = json.loads((bf16_run / "adapter" / "chatterbox_base.json").read_text())
    assert base["family"] == "turbo" and base["model"] == "tiny-turbo"
    assert "Chatterbox turbo T3" in (bf16_run / "adapter" / "README.md").read_text()

    # stock peft puts the adapter on our GPT-2 T3; GPT-2 stores Conv1D weights transposed: a merge that got
    # fan_in_fan_out wrong would fold in the transposed update and move these logits
    from peft import PeftModel

    fresh = ChatterboxTurboTTS.from_preset().t3
    probe = probe_batch(fresh.cfg)
    before = probe_logits(fresh, probe)
    adapted = PeftModel.from_pretrained(fresh, str(bf16_run / "adapter")).get_base_model()
    with_adapter = probe_logits(adapted, probe)
    assert float((with_adapter - before).abs().max()) > 1e-2  # the adapter really changes the model
    merged = ChatterboxTurboTTS.from_local(bf16_run / "merged")
    torch.testing.assert_close(probe_logits(merged.t3, probe), with_adapter, rtol=1e-5, atol=1e-5)
    loaded = load_chatterbox(bf16_run / "adapter")  # adapters-as-models: the base comes with it
    assert loaded.FAMILY.name == "turbo"
    torch.testing.assert_close(probe_logits(loaded.t3, probe), with_adapter, rtol=1e-5, atol=1e-5)


def test_turbo_adapter_is_refused_on_nano_and_when_edited(bf16_run, tmp_path):
    adapter = bf16_run / "adapter"
    cmd = [sys.executable, "-m", "training.merge", "--checkpoint", str(adapter), "--out", str(tmp_path / "x")]
    wrong = subprocess.run([*cmd, "--base", "tiny-nano"], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert wrong.returncode == 2 and "trained on the turbo model, this base is the nano one" in wrong.stderr
    edited = tmp_path / "edited"
    shutil.copytree(adapter, edited)
    config = json.loads((edited / "adapter_config.json").read_text())
    (edited / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 16}))
    wrong = subprocess.run([*cmd[:4], str(edited), *cmd[5:], "--base", "tiny-turbo"], capture_output=True, text=True,
                           cwd=PROJECT_ROOT)
    assert wrong.returncode == 2 and "alpha: adapter_config.json says 16, training_config.json says 8" in wrong.stderr
    assert not (tmp_path / "x").exists()


def test_llama_targets_on_turbo_are_refused_before_any_work(audio, tmp_path):
    cfg = TrainConfig(model="tiny-nano", audio_dir=str(audio), output_dir=str(tmp_path), run="x", device="cpu",
                      lora=LoraSettings(targets=("q_proj", "c_attn")))
    with pytest.raises(TrainingError, match=r"\['q_proj'\] are not layers of the nano model's T3; its layers are "
                                            "c_attn, c_proj, c_fc"):
        train(cfg, tmp_path / "x")
    with pytest.raises(TrainingError, match="exaggeration=0.5 does not apply to the nano model"):
        train(replace(cfg, lora=LoraSettings(), exaggeration=0.5), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_two_process_turbo_run(audio, bf16_run, tmp_path):
    """torchrun with 2 CPU processes on the tiny Nano preset: one run, one adapter, logged once."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "training.lora",
           "--model", "tiny-nano", "--device", "cpu", "--audio-dir", str(audio), "--output-dir", str(out),
           "--max-steps", "2", "--batch-size", "1", "--save-every", "1", "--lora.rank", "4", "--lora.alpha", "8",
           "--plot-every-seconds", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    run = next(p for p in out.iterdir() if not p.name.startswith("."))
    assert "processes: 2" in done.stdout and done.stdout.count("adapter: ") == 1
    assert [p.name for p in step_dirs(run)] == ["step-1", "step-2"]
    assert json.loads((run / "adapter" / "chatterbox_base.json").read_text())["family"] == "nano"
    assert family_for(run / "adapter").name == "nano"  # what training and evaluation read before loading
    assert [r for r, _ in train_losses(run)] == [1, 2]
    nano = ChatterboxNanoTTS.from_preset()
    with pytest.raises(AdapterMismatch, match="trained on the nano model, this base is the turbo one"):
        load_chatterbox("tiny-turbo", adapter=run / "adapter")
    assert load_chatterbox("tiny-nano", adapter=run / "adapter").t3.cfg == nano.t3.cfg
