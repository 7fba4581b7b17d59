"""T3 training rows on real speech (espeak-ng): columns, token wrapping, split, cache, drops, and the collator
that conditions every row on a different clip."""
from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from inference.audio import load_audio
from inference.models.t3 import T3Config
from training.dataset import (COLUMNS, DatasetConfig, T3Collator, _prompt_is_whole_clip, batch_cond, build_dataset,
                              cache_key, model_fingerprint, pick_conditioning, split_paths, validation_size)
from training.ingest import Clip

ESPEAK = shutil.which("espeak-ng")
SR = 24000
MODEL_ID = "tiny-preset-test"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A journey of a thousand miles begins with one step.",
    "Please call Stella and ask her to come.",
    "Our train leaves at half past seven.",
]
START_TEXT, STOP_TEXT, START_SPEECH, STOP_SPEECH = 255, 0, 6561, 6562


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _clip(path: Path) -> Clip:
    d = sf.info(str(path)).duration
    return Clip(source=path, path=path, start=0.0, end=d, duration=d)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """5 spoken clips at 24 kHz with their transcripts, plus 3 that must be dropped (same audio as clip 0)."""
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed")
    root = tmp_path_factory.mktemp("clips")
    clips, transcripts = [], {}
    for i, text in enumerate(SENTENCES):
        raw = root / f"raw{i}.wav"
        subprocess.run([ESPEAK, "-v", "en-us", "-w", str(raw), text], check=True, capture_output=True)
        path = root / f"clip{i}.wav"
        sf.write(path, load_audio(raw, SR), SR)
        raw.unlink()
        clips.append(_clip(path))
        transcripts[str(path)] = text
    bad = {"empty.wav": "   ", "toolong.wav": "word " * 300, "missing.wav": None}
    for name, text in bad.items():
        path = root / name
        shutil.copy(clips[0].path, path)
        clips.append(_clip(path))
        if text is not None:
            transcripts[path] = text  # Path keys work as well as str keys
    return SimpleNamespace(clips=clips, transcripts=transcripts, root=root, bad=bad)


@pytest.fixture(scope="module")
def built(corpus, english, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    records = _Records()
    logger = logging.getLogger("training.dataset")
    logger.addHandler(records)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        data = build_dataset(corpus.clips, corpus.transcripts, english, cache, DatasetConfig(), model_id=MODEL_ID)
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
    return SimpleNamespace(data=data, cache=cache, log=records.messages)


def _rows(ds) -> list[dict]:
    return [ds[i] for i in range(len(ds))]


# ------------------------------------------------------------------------------------------ rows

def test_columns_types_and_text_tokens(built, corpus, english):
    data = built.data
    assert set(data) == {"train", "validation"}
    texts = {str(c.path): t for c, t in zip(corpus.clips, SENTENCES)}
    for split in data.values():
        assert split.column_names == list(COLUMNS)
        for row in _rows(split):
            assert isinstance(row["path"], str) and isinstance(row["duration"], float)
            assert row["text"] == texts[row["path"]]
            assert all(isinstance(t, int) for t in row["text_tokens"] + row["speech_tokens"] + row["prompt_tokens"])
            assert row["text_tokens"] == english.text_tokens(row["text"])[0].tolist()
            assert row["text_tokens"][0] == START_TEXT and row["text_tokens"][-1] == STOP_TEXT
            assert len(row["speaker_emb"]) == 256 and all(isinstance(v, float) for v in row["speaker_emb"])
            assert np.isfinite(row["speaker_emb"]).all() and np.linalg.norm(row["speaker_emb"]) > 0
            assert abs(row["duration"] - sf.info(row["path"]).duration) < 0.01


def test_speech_tokens_are_wrapped_at_25_per_second(built):
    rows = _rows(built.data["train"]) + _rows(built.data["validation"])
    assert len(rows) == 5
    for row in rows:
        speech = row["speech_tokens"]
        assert speech[0] == START_SPEECH and speech[-1] == STOP_SPEECH
        inner = speech[1:-1]
        assert all(0 <= t < START_SPEECH for t in inner)
        assert 2.0 <= row["duration"] <= 4.0
        assert abs(len(inner) / row["duration"] - 25) <= 2
        # Clips shorter than 6 s: the prompt is the whole clip, tokenised the same way.
        assert 0 < len(row["prompt_tokens"]) <= 150
        assert row["prompt_tokens"] == inner


def test_prompt_tokens_match_the_inference_prompt(built, english):
    """What prepare_conditionals would give T3 for this clip: tokens of its first 6 s, at most 150."""
    row = built.data["validation"][0]
    wav = torch.from_numpy(load_audio(row["path"], 16000)[: 6 * 16000])
    tokens, lens = english.s3gen.tokenizer([wav], max_len=150)
    assert row["prompt_tokens"] == tokens[0, : int(lens[0])].tolist()


def test_prompt_shortcut_only_for_whole_clips(english):
    tok = english.s3gen.tokenizer
    assert _prompt_is_whole_clip(tok, 6 * 16000, 150, 6)
    assert not _prompt_is_whole_clip(tok, 6 * 16000 + 1, 150, 6)
    assert _prompt_is_whole_clip(tok, 6 * 16000 + 1, 375, 15)  # Turbo's 15 s window
    assert not _prompt_is_whole_clip(tok, 3 * 16000, 50, 6)  # 75 tokens > max_len 50: the prompt is cut
    assert not _prompt_is_whole_clip(lambda *a, **k: None, 16000, 150, 6)  # unknown tokenizer: no shortcut


def test_bad_clips_are_dropped_with_a_logged_reason(built, corpus):
    kept = {r["path"] for s in built.data.values() for r in _rows(s)}
    assert kept == {str(c.path) for c in corpus.clips[:5]}
    reasons = {"empty.wav": "empty transcript", "toolong.wav": "text does not tokenize", "missing.wav": "no transcript"}
    for name, reason in reasons.items():
        assert any(name in m and reason in m for m in built.log), (name, built.log)
    (folder,) = built.cache.glob("dataset-*")
    info = json.loads((folder / "build_info.json").read_text())
    assert {Path(p).name: r.split(":")[0] for p, r in info["dropped"]} == reasons
    assert (info["train"], info["validation"]) == (4, 1)


def test_no_usable_clip_is_an_error_and_caches_nothing(corpus, english, tmp_path):
    empty = {str(c.path): "" for c in corpus.clips}
    with pytest.raises(ValueError, match="no usable clips"):
        build_dataset(corpus.clips, empty, english, tmp_path, model_id=MODEL_ID)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ split

def test_split_sizes_disjoint_and_by_path(built, corpus):
    train = [r["path"] for r in _rows(built.data["train"])]
    val = [r["path"] for r in _rows(built.data["validation"])]
    assert len(train) == 4 and len(val) == 1 and not set(train) & set(val)
    assert train == sorted(train)
    assert split_paths(train + val, DatasetConfig()) == (train, val)


def test_split_is_deterministic_and_order_independent():
    paths = [f"/data/clip{i:03d}.wav" for i in range(40)]
    cfg = DatasetConfig(val_fraction=0.1, seed=3)
    train, val = split_paths(paths, cfg)
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    assert split_paths(shuffled, cfg) == (train, val)
    assert len(val) == 4 and sorted(train + val) == sorted(paths) and not set(train) & set(val)
    assert split_paths(paths, DatasetConfig(val_fraction=0.1, seed=4))[1] != val
    # the same clips in another folder (another machine, a copied dataset, pytest's numbered tmp dirs)
    moved = split_paths([p.replace("/data/", "/srv/elsewhere/") for p in paths], cfg)
    assert [Path(p).name for p in moved[1]] == [Path(p).name for p in val]
    relative = split_paths([p.replace("/data/", "data/") for p in paths], cfg)  # audio_dir = "data" on the CLI
    assert [Path(p).name for p in relative[1]] == [Path(p).name for p in val]


@pytest.mark.parametrize("n,frac,expected", [(0, 0.05, 0), (2, 0.5, 0), (3, 0.05, 1), (3, 0.5, 1), (4, 0.05, 1),
                                             (5, 0.05, 1), (100, 0.05, 5), (10, 0.0, 0), (4, 0.9, 2)])
def test_validation_size(n, frac, expected):
    assert validation_size(n, DatasetConfig(val_fraction=frac)) == expected


def test_config_is_checked():
    with pytest.raises(ValueError):
        DatasetConfig(val_fraction=1.0)
    with pytest.raises(ValueError):
        DatasetConfig(max_speech_seconds=0)
    with pytest.raises(ValueError):
        DatasetConfig(seed=-1)


# ------------------------------------------------------------------------------------------ cache

def test_second_build_loads_the_cache_without_tokenizing(built, corpus, english):
    tokenizer = english.s3gen.tokenizer

    def boom(*args, **kwargs):
        raise AssertionError("the speech tokenizer ran although the dataset was cached")

    tokenizer.forward = boom  # instance attribute: nn.Module.__call__ dispatches to it
    try:
        shuffled = corpus.clips[::-1]
        transcripts = {str(k): v for k, v in corpus.transcripts.items()}
        again = build_dataset(shuffled, transcripts, english, built.cache, DatasetConfig(), model_id=MODEL_ID)
    finally:
        del tokenizer.forward
    for split in ("train", "validation"):
        assert _rows(again[split]) == _rows(built.data[split])
    entries = sorted(p.name for p in built.cache.iterdir())
    assert len(entries) == 1 and entries[0].startswith("dataset-")  # no temporary folder left behind


class _CountingTokenizer:
    """Stands in for the S3 tokenizer: 25 tokens per second, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, wavs, max_len=None):
        self.calls += 1
        n = len(wavs[0]) // 640 if max_len is None else min(len(wavs[0]) // 640, max_len)
        return torch.arange(n)[None] % 6561, torch.tensor([n])


def test_few_clips_give_an_empty_validation_split_that_caches(corpus, english, tmp_path):
    tokenizer = _CountingTokenizer()
    model = SimpleNamespace(t3=english.t3, FAMILY=english.FAMILY, text_tokens=english.text_tokens,
                            s3gen=SimpleNamespace(tokenizer=tokenizer),
                            ve=SimpleNamespace(embed_speaker=lambda wavs, sr: torch.ones(1, 256)))
    clips = corpus.clips[:2]  # two clips: both train (each conditions on the other), none left to validate
    first = build_dataset(clips, corpus.transcripts, model, tmp_path, model_id=MODEL_ID)
    assert (len(first["train"]), len(first["validation"])) == (2, 0)
    assert first["validation"].column_names == list(COLUMNS)
    assert tokenizer.calls == 4  # whole clip and prompt (a tokenizer without `cfg` gets no shortcut)
    second = build_dataset(clips[::-1], corpus.transcripts, model, tmp_path, model_id=MODEL_ID)
    assert tokenizer.calls == 4
    assert _rows(second["train"]) == _rows(first["train"]) and len(second["validation"]) == 0


def test_cache_key_covers_inputs(corpus, tmp_path):
    clips, texts, cfg = corpus.clips[:5], {str(c.path): t for c, t in zip(corpus.clips, SENTENCES)}, DatasetConfig()
    key = cache_key(clips, texts, MODEL_ID, cfg)
    assert cache_key(clips[::-1], texts, MODEL_ID, cfg) == key
    assert cache_key(clips, {**texts, str(clips[0].path): "Something else."}, MODEL_ID, cfg) != key
    assert cache_key(clips, texts, "another-model", cfg) != key
    assert cache_key(clips, texts, MODEL_ID, DatasetConfig(seed=1)) != key
    assert cache_key(clips[:4], texts, MODEL_ID, cfg) != key
    # Same path, different bytes: a re-recorded clip is not served from the cache.
    moved = tmp_path / "clip.wav"
    shutil.copy(clips[0].path, moved)
    one = cache_key([_clip(moved)], {str(moved): "x"}, MODEL_ID, cfg)
    shutil.copy(clips[1].path, moved)
    assert cache_key([_clip(moved)], {str(moved): "x"}, MODEL_ID, cfg) != one


def test_model_fingerprint_tracks_weights(english):
    fake = SimpleNamespace(t3=english.t3, tokenizer=english.tokenizer,
                           s3gen=SimpleNamespace(tokenizer=torch.nn.Linear(3, 2)), ve=torch.nn.Linear(2, 2))
    first = model_fingerprint(fake)
    assert model_fingerprint(fake) == first
    with torch.no_grad():
        fake.ve.weight[0, 0] += 1
    assert model_fingerprint(fake) != first


def test_multilingual_needs_a_language(corpus, tmp_path):
    model = SimpleNamespace(t3=SimpleNamespace(cfg=T3Config.tiny(multilingual=True)))
    with pytest.raises(ValueError, match="language"):
        build_dataset(corpus.clips, corpus.transcripts, model, tmp_path, DatasetConfig(), model_id=MODEL_ID)


# ------------------------------------------------------------------------------------------ collator

def test_pick_conditioning_never_returns_the_row():
    rng = np.random.default_rng(0)
    for n in (2, 3, 7):
        for own in range(n):
            picks = {pick_conditioning(own, n, rng) for _ in range(200)}
            assert picks == set(range(n)) - {own}
    assert {pick_conditioning(None, 3, rng) for _ in range(100)} == {0, 1, 2}
    assert pick_conditioning(0, 1, rng) == 0
    with pytest.raises(ValueError):
        pick_conditioning(None, 0, rng)


def test_collator_conditions_on_another_train_clip(built):
    train, val = built.data["train"], built.data["validation"]
    collate = T3Collator(seed=7)
    rows = _rows(train)
    seen: dict[str, set] = {r["path"]: set() for r in rows}
    for step in range(40):
        batch = collate(rows, train, step=step)
        for path, cond in zip(batch["path"], batch["cond_path"]):
            assert cond != path
            seen[path].add(cond)
    assert all(len(conds) >= 2 for conds in seen.values())  # conditioning varies from step to step
    train_paths = set(train["path"])
    vbatch = collate(_rows(val), train, step=0)
    assert set(vbatch["cond_path"]) <= train_paths

    again = T3Collator(seed=7)(rows, train, step=5)
    assert again["cond_path"] == collate(rows, train, step=5)["cond_path"]
    # Without a step the calls count up: a fresh collator reproduces steps 0, 1, ...
    fresh = T3Collator(seed=7)
    assert [fresh(rows, train)["cond_path"] for _ in range(3)] == \
           [collate(rows, train, step=s)["cond_path"] for s in range(3)]


def test_collator_padding_and_lengths(built):
    train = built.data["train"]
    rows = _rows(train)
    batch = T3Collator(seed=1)(train[0:len(train)], train, step=3)  # dict-of-columns input
    assert batch["cond_path"] == T3Collator(seed=1)(rows, train, step=3)["cond_path"]
    b = len(rows)
    tl, sl = batch["text_token_lens"], batch["speech_token_lens"]
    assert batch["text_tokens"].shape == (b, int(tl.max())) and batch["speech_tokens"].shape == (b, int(sl.max()))
    assert len(set(tl.tolist())) > 1 and len(set(sl.tolist())) > 1  # padding is really exercised
    by_path = {r["path"]: r for r in rows}
    for i, path in enumerate(batch["path"]):
        row = by_path[path]
        assert tl[i] == len(row["text_tokens"]) and sl[i] == len(row["speech_tokens"])
        assert batch["text_tokens"][i, : tl[i]].tolist() == row["text_tokens"]
        assert (batch["text_tokens"][i, tl[i]:] == STOP_TEXT).all()
        speech = batch["speech_tokens"][i]
        assert speech[: sl[i]].tolist() == row["speech_tokens"]
        assert speech[0] == START_SPEECH and speech[sl[i] - 1] == STOP_SPEECH
        assert (speech[sl[i]:] == STOP_SPEECH).all()
        cond = by_path[batch["cond_path"][i]]
        assert torch.equal(batch["speaker_emb"][i], torch.tensor(cond["speaker_emb"]))
        assert batch["prompt_tokens"][i].tolist() == cond["prompt_tokens"][: batch["prompt_tokens"].shape[1]]
    assert batch["prompt_tokens"].shape[1] == min(len(by_path[c]["prompt_tokens"]) for c in batch["cond_path"])
    assert batch["speaker_emb"].shape == (b, 256) and batch["speaker_emb"].dtype == torch.float32
    assert batch["emotion_adv"].shape == (b, 1, 1) and (batch["emotion_adv"] == 0.5).all()
    for key in ("text_tokens", "text_token_lens", "speech_tokens", "speech_token_lens", "prompt_tokens"):
        assert batch[key].dtype == torch.long


def test_single_clip_pool_falls_back_to_itself(built, caplog):
    row = built.data["train"][0]
    with caplog.at_level(logging.WARNING, logger="training.dataset"):
        batch = T3Collator()([row], [row])
    assert batch["cond_path"] == [row["path"]]
    assert "only" in caplog.text


def test_t3_loss_runs_on_a_collated_batch(built, english):
    train = built.data["train"]
    batch = T3Collator.for_model(english, seed=0)(_rows(train), train, step=0)
    loss_text, loss_speech = english.t3.loss(batch_cond(batch), batch["text_tokens"], batch["text_token_lens"],
                                             batch["speech_tokens"], batch["speech_token_lens"])
    assert torch.isfinite(loss_text) and torch.isfinite(loss_speech)
    assert loss_text > 0 and loss_speech > 0
