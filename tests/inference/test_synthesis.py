"""Synthesis end to end on the tiny presets: the waveform generate() returns, seeds, the Perth watermark,
long text, voice cloning from real speech (espeak-ng) and awkward references, the S3 tokenizer's rate,
and the `python -m inference.vc` / `python -m inference.tts` commands.

The presets' weights are synthetic, so the audio is not speech; shapes, lengths, determinism, the
watermark and the conditioning pipeline are nevertheless those of the real models. Tests that prepare
another voice restore the shared fixture's (`restore_voice`).

Time: S3Gen's flow costs ~3.5 s a call even for a few tokens here (2 cores; MKL_CBWR=COMPATIBLE, where it is
set, makes its matmuls ~2.5x slower), so synthesis uses a 1 s voice, few tokens and
as few calls as the assertions allow.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from inference import presets
from inference.audio import AudioError, load_audio
from inference.models.tokenizers import TextError, normalize_text
from inference.models.tokenizers.normalize import split_for_synthesis
from inference.settings import PROJECT_ROOT, load_config
from inference.tts import TTSConfig

SR = 24000
HOP = 480  # output samples per mel frame; S3Gen makes 2 frames per speech token
SPEECH_VOCAB_END = 6561
TOKENS_PER_SECOND = 25
HELLO = dict(seed=1, max_new_tokens=20)

SPEECH_TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away."  # ~4 s with espeak-ng
LONG_TEXT = "The sun rose. Birds sang! Was it day?\n  The farmer woke. He fed the cows."  # 5 sentences


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def lost_frames(conds) -> int:
    """Mel frames the flow drops from every output: embed_ref keeps an odd prompt mel (F = 2P + 1)."""
    return conds.gen["prompt_feat"].shape[1] - 2 * conds.gen["prompt_token"].shape[1]


def expected_samples(n_tokens: int, conds) -> int:
    return (2 * n_tokens - lost_frames(conds)) * HOP


def without_spaces(text: str) -> str:
    return "".join(text.split())


@pytest.fixture
def restore_voice(english):
    """For tests that prepare another voice on the shared English preset."""
    voice = english.conds
    yield
    english.conds = voice


@pytest.fixture(scope="module")
def short_voice(english):
    """A 1 s voice (the preset's is 3 s): the flow's cost grows with the prompt."""
    voice = english.conds
    try:
        return english.prepare_conditionals_from_array(presets.synthetic_reference(SR, seconds=1.0), SR)
    finally:
        english.conds = voice


@pytest.fixture
def speak(english, short_voice, restore_voice):
    """The English preset speaking with `short_voice` during the test."""
    english.conds = short_voice
    return english


# --- generate(): the waveform -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hello(english, short_voice) -> torch.Tensor:
    voice = english.conds
    english.conds = short_voice
    try:
        return english.generate("Hello there.", watermark=False, **HELLO)
    finally:
        english.conds = voice


def test_generate_waveform(speak, hello):
    tokens = speak.generate_speech_tokens("Hello there.", **HELLO)  # what generate() synthesised
    assert len(tokens) > 0
    assert lost_frames(speak.conds) in (0, 1)
    assert hello.dtype == torch.float32
    assert hello.shape == (1, expected_samples(len(tokens), speak.conds))
    assert hello.shape[1] > 0 and hello.shape[1] % HOP == 0
    assert torch.isfinite(hello).all()
    assert hello.abs().max() <= 0.99  # the vocoder's clamp
    assert hello.abs().max() > 0.01  # not silence
    assert torch.all(hello[0, :HOP] == 0)  # trim fade: the first frame is silenced ...
    assert hello[0, HOP:2 * HOP].abs().max() > 0  # ... then faded in


def test_same_seed_same_audio(speak, hello):
    assert torch.equal(speak.generate("Hello there.", watermark=False, **HELLO), hello)


def test_different_seed_different_audio(speak, hello):
    other = speak.generate("Hello there.", watermark=False, **{**HELLO, "seed": 2})
    assert other.shape != hello.shape or not torch.equal(other, hello)


def test_watermark_on_and_off(speak, hello):
    from inference.watermark import detect_watermark

    marked = speak.generate("Hello there.", watermark=True, **HELLO)
    assert marked.shape == hello.shape
    assert not torch.equal(marked, hello)
    assert detect_watermark(marked[0].numpy(), SR) > 0.9
    assert detect_watermark(hello[0].numpy(), SR) < 0.1


# --- long text ----------------------------------------------------------------------------------------

def test_long_text_is_synthesised_piece_by_piece(speak):
    english = speak
    pieces = split_for_synthesis(LONG_TEXT, 40)
    assert pieces == ["The sun rose. Birds sang! Was it day?", "The farmer woke. He fed the cows."]
    assert " ".join(pieces) == normalize_text(LONG_TEXT)  # nothing lost, nothing added

    calls = []
    original = english.generate_speech_tokens

    def spy(text, *args, **kwargs):
        calls.append(text)
        return original(text, *args, **kwargs)

    english.generate_speech_tokens = spy
    try:
        wav = english.generate(LONG_TEXT, seed=5, watermark=False, max_chars_per_call=40, max_new_tokens=12)
    finally:
        del english.generate_speech_tokens
    assert calls == pieces

    first = english.generate(pieces[0], seed=5, watermark=False, max_new_tokens=12)
    assert wav.shape[1] > first.shape[1]
    assert torch.equal(wav[:, : first.shape[1]], first)  # piece i is seeded with seed + i: the first is as alone
    counts = [len(english.generate_speech_tokens(p, seed=5 + i, max_new_tokens=12)) for i, p in enumerate(pieces)]
    assert all(counts)
    assert wav.shape[1] == sum(expected_samples(n, english.conds) for n in counts)  # every piece is in the audio


def test_split_rejects_empty_text():
    for text in ("", "  \n\t ", None):
        with pytest.raises(TextError):
            split_for_synthesis(text)


def test_split_keeps_short_text_whole():
    assert split_for_synthesis("Hello there.\n  How are   you?", 300) == ["Hello there. How are you?"]


def test_split_cuts_a_long_word():
    word = "a" * 700
    pieces = split_for_synthesis(word, 300)
    assert len(pieces) == 3 and all(len(p) <= 300 for p in pieces)
    assert "".join(pieces) == word
    pieces = split_for_synthesis(f"Start {word} end.", 300)
    assert all(len(p) <= 300 for p in pieces)
    assert without_spaces(" ".join(pieces)) == without_spaces(f"Start {word} end.")


def test_split_keeps_a_tag_whole():
    """A long sentence without commas is cut at a space, never at the one inside Turbo's `[clear throat]`."""
    text = "word " * 57 + "then [clear throat] and more words after it"
    pieces = split_for_synthesis(text, 300)
    assert len(text.split("[")[0]) < 300 < len(text.split("]")[0])  # the limit falls inside the tag
    assert pieces[1].startswith("[clear throat]") and all(len(p) <= 300 for p in pieces)
    assert " ".join(pieces) == " ".join(text.split())


def test_split_cjk_sentences():
    text = "今天天气很好。我们去公园散步吧！你觉得怎么样？明天可能会下雨。"
    assert split_for_synthesis(text, 10) == ["今天天气很好。", "我们去公园散步吧！", "你觉得怎么样？", "明天可能会下雨。"]
    pieces = split_for_synthesis(text * 5, 40)
    assert len(pieces) > 1 and all(len(p) <= 40 for p in pieces)
    assert all(p.endswith(("。", "！", "？")) for p in pieces)  # cut at sentence ends only
    assert "".join(pieces) == text * 5
    clauses = "今天天气很好，我们去公园散步吧，你觉得怎么样，明天可能会下雨，后天也许会晴。"  # one long sentence
    pieces = split_for_synthesis(clauses, 10)
    assert all(len(p) <= 10 for p in pieces) and all(p.endswith(("，", "。")) for p in pieces)
    assert "".join(pieces) == clauses


def _random_texts(n: int):
    """(text, limit) pairs mixing words, over-long words, Latin and CJK sentence ends and commas."""
    rng = random.Random(0)
    words = ["a", "word", "longer-word", "x" * 45, "Hi.", "well,", "why?", "no!", "天气。", "好，", "吧！", "、", "，"]
    for _ in range(n):
        yield " ".join(rng.choice(words) for _ in range(rng.randint(1, 40))), rng.randint(2, 60)


def test_split_never_drops_text():
    for text, limit in _random_texts(500):
        pieces = split_for_synthesis(text, limit)
        assert all(p.strip() for p in pieces), (text, limit, pieces)
        assert without_spaces("".join(pieces)) == without_spaces(text), (text, limit, pieces)


def test_split_never_exceeds_the_limit():
    assert all(len(p) <= 6 for p in split_for_synthesis("well, 、 a 、", 6))  # ['well, 、', 'a 、']
    for text, limit in _random_texts(500):
        pieces = split_for_synthesis(text, limit)
        assert all(len(p) <= limit for p in pieces), (text, limit, pieces)


# --- voice cloning from real speech -------------------------------------------------------------------

class Speech(NamedTuple):
    path: Path
    wav: np.ndarray  # float32 mono
    sr: int

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sr


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Speech:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "fox.wav"
    subprocess.run([exe, "-w", str(path), SPEECH_TEXT], check=True, capture_output=True, timeout=60)
    wav, sr = sf.read(str(path), dtype="float32")
    assert sr == 22050 and wav.ndim == 1 and 3.0 < len(wav) / sr < 6.0
    return Speech(path, wav, sr)


@pytest.fixture(scope="module")
def speech_conds(english, speech):
    """The voice of `speech`; the preset keeps its own."""
    voice = english.conds
    try:
        conds = english.prepare_conditionals(speech.path)
        assert english.conds is conds
    finally:
        english.conds = voice
    return conds


def test_conditionals_of_real_speech(english, speech, speech_conds):
    t3, gen = speech_conds.t3, speech_conds.gen
    expected_tokens = TOKENS_PER_SECOND * speech.seconds  # the clip is shorter than both prompt limits

    assert t3.speaker_emb.shape == (1, 256) and torch.isfinite(t3.speaker_emb).all()
    assert t3.speaker_emb.norm().item() == pytest.approx(1.0, abs=1e-4)  # one utterance: a unit vector
    assert not torch.allclose(t3.speaker_emb, english.conds.t3.speaker_emb)  # not the preset's voice
    prompt = t3.cond_prompt_speech_tokens
    assert prompt.dtype == torch.int64 and prompt.shape[0] == 1
    assert prompt.shape[1] <= english.t3.cfg.speech_cond_prompt_len == 150
    assert abs(prompt.shape[1] - expected_tokens) <= 1
    assert (prompt >= 0).all() and (prompt < SPEECH_VOCAB_END).all()
    assert t3.emotion_adv.shape == (1, 1, 1) and t3.emotion_adv.item() == 0.5

    tokens, feat, embedding = gen["prompt_token"], gen["prompt_feat"], gen["embedding"]
    n = tokens.shape[1]
    assert tokens.dtype == torch.int64 and tokens.shape == (1, n)
    assert abs(n - expected_tokens) <= 1
    assert (tokens >= 0).all() and (tokens < SPEECH_VOCAB_END).all()
    assert gen["prompt_token_len"].tolist() == [n]
    assert feat.shape[0] == 1 and feat.shape[2] == 80
    assert feat.shape[1] in (2 * n, 2 * n + 1)  # embed_ref cuts tokens to the mel, which may keep one odd frame
    assert torch.isfinite(feat).all()
    assert embedding.shape == (1, 192) and torch.isfinite(embedding).all() and embedding.abs().max() > 0


def test_silent_reference(english):
    voice = english.conds
    with pytest.raises(AudioError, match="silent"):
        english.prepare_conditionals_from_array(np.zeros(3 * 22050, dtype=np.float32), 22050)
    assert english.conds is voice  # a rejected reference leaves the current voice alone


def test_too_short_reference(english, speech, tmp_path):
    path = tmp_path / "short.wav"
    start = int(1.0 * speech.sr)
    sf.write(str(path), speech.wav[start:start + int(0.3 * speech.sr)], speech.sr)
    voice = english.conds
    with pytest.raises(AudioError, match="too short") as err:
        english.prepare_conditionals(path)
    assert str(path) in str(err.value)
    assert english.conds is voice


@pytest.mark.parametrize("rate", [16000, 24000])
def test_non_finite_reference_file(english, speech, tmp_path, rate):
    """A float WAV holding NaN at a rate that needs resampling used to fail inside librosa with a traceback."""
    import librosa

    wav = librosa.resample(speech.wav, orig_sr=speech.sr, target_sr=rate)
    wav[500:510] = np.nan
    path = tmp_path / f"nan{rate}.wav"
    sf.write(str(path), wav, rate, subtype="FLOAT")
    voice = english.conds
    with pytest.raises(AudioError, match="NaN or infinite samples") as err:
        english.prepare_conditionals(path)
    assert str(path) in str(err.value)
    assert english.conds is voice


def test_stereo_reference_is_downmixed(english, speech, speech_conds, tmp_path, restore_voice, caplog):
    # Channels differ, their mean is the mono clip: taking one channel would give another voice.
    other = 0.3 * np.roll(speech.wav, speech.sr // 3)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([speech.wav + other, speech.wav - other], axis=1), speech.sr, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, speech.sr), speech.wav, atol=1e-6)
    conds = english.prepare_conditionals(path)
    assert cos(conds.t3.speaker_emb, speech_conds.t3.speaker_emb) > 0.99
    assert cos(conds.gen["embedding"], speech_conds.gen["embedding"]) > 0.99
    assert "clipped" not in caplog.text


def test_clipped_reference_warns_but_works(english, speech, restore_voice, caplog):
    clipped = np.clip(speech.wav * 20, -1.0, 1.0)
    with caplog.at_level("WARNING", logger="inference.audio"):
        conds = english.prepare_conditionals_from_array(clipped, speech.sr, source="loud.wav")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("clipped" in m and "loud.wav" in m for m in warnings), warnings
    assert conds.t3.speaker_emb.shape == (1, 256) and torch.isfinite(conds.t3.speaker_emb).all()
    assert torch.isfinite(conds.gen["embedding"]).all()


def test_long_reference_is_cut_to_60_s(english, speech, restore_voice, caplog):
    clip = librosa.resample(speech.wav, orig_sr=speech.sr, target_sr=SR)
    long = np.tile(clip, math.ceil(70 * SR / len(clip)))[: 70 * SR]
    with caplog.at_level("INFO", logger="inference.audio"):
        conds = english.prepare_conditionals_from_array(long, SR)
    assert "first 60 s" in caplog.text
    assert conds.t3.cond_prompt_speech_tokens.shape == (1, 150)  # T3's prompt: the first 6 s, capped at 150
    n = conds.gen["prompt_token"].shape[1]
    assert abs(n - 10 * TOKENS_PER_SECOND) <= 1  # S3Gen's prompt: the first 10 s
    assert conds.gen["prompt_feat"].shape[1] in (2 * n, 2 * n + 1)
    cut = english.prepare_conditionals_from_array(long[: 60 * SR], SR)
    assert torch.equal(conds.t3.speaker_emb, cut.t3.speaker_emb)  # the voice embedding saw only 60 s


# Measured cosine of the x-vector against the 22.05 kHz file: 48 kHz 0.99999, 8 kHz 0.974 (no content
# above 4 kHz); an unrelated voice (the preset's synthetic reference) gives 0.74.
@pytest.mark.parametrize("rate, min_cos", [(48000, 0.99), (8000, 0.9)])
def test_other_sample_rates_are_resampled(english, speech, speech_conds, tmp_path, restore_voice, rate, min_cos):
    path = tmp_path / f"{rate}.wav"
    sf.write(str(path), librosa.resample(speech.wav, orig_sr=speech.sr, target_sr=rate), rate)
    assert sf.info(str(path)).samplerate == rate
    conds = english.prepare_conditionals(path)
    assert cos(conds.gen["embedding"], speech_conds.gen["embedding"]) > min_cos
    assert cos(conds.t3.speaker_emb, speech_conds.t3.speaker_emb) > 0.99
    assert abs(conds.gen["prompt_token"].shape[1] - speech_conds.gen["prompt_token"].shape[1]) <= 1


# --- S3 tokenizer and x-vector on arbitrary lengths -----------------------------------------------------

@pytest.fixture(scope="module")
def speech_16k(speech) -> torch.Tensor:
    """10 s of espeak speech at the tokenizer's 16 kHz."""
    wav = librosa.resample(speech.wav, orig_sr=speech.sr, target_sr=16000)
    return torch.from_numpy(np.tile(wav, math.ceil(10 * 16000 / len(wav)))[: 10 * 16000])


@pytest.mark.parametrize("seconds", [1.0, 3.3, 7.7])
def test_tokens_and_xvector_of_any_length(english, speech_16k, seconds):
    wav = speech_16k[: int(seconds * 16000)]
    tokens, lengths = english.s3gen.tokenizer([wav])
    assert tokens.dtype == torch.int64 and tokens.shape[0] == 1
    assert abs(tokens.shape[1] - TOKENS_PER_SECOND * seconds) <= 1
    assert lengths.tolist() == [tokens.shape[1]]
    assert (tokens >= 0).all() and (tokens < SPEECH_VOCAB_END).all()
    xvector = english.s3gen.speaker_encoder.inference(wav[None])
    assert xvector.shape == (1, 192) and torch.isfinite(xvector).all()


def test_tokenizer_batch_matches_single_clips(english, speech_16k):
    a, b = speech_16k[:16000], speech_16k[5000:5000 + 52800]  # 1.0 s and 3.3 s
    batch, lengths = english.s3gen.tokenizer([a, b])
    singles = [english.s3gen.tokenizer([w])[0][0] for w in (a, b)]
    assert lengths.tolist() == [len(s) for s in singles]
    assert batch.shape == (2, max(lengths.tolist()))
    for row, n, single in zip(batch, lengths.tolist(), singles):
        assert torch.equal(row[:n], single)  # padding does not leak into the shorter clip


# --- commands -----------------------------------------------------------------------------------------

def _run(module: str, *args) -> subprocess.CompletedProcess:
    # Without MKL_CBWR (only the parity goldens need MKL's generic code path): the commands run ~1.5x
    # faster, and their output differs from this process's by ~1e-5, below a 16-bit WAV's resolution.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "MKL_CBWR"}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    """(source 1.3 s at 16 kHz, target voice 2 s at 22.05 kHz): short, so the commands stay quick."""
    folder = tmp_path_factory.mktemp("clips")
    source, target = folder / "source.wav", folder / "target.wav"
    sf.write(str(source), presets.synthetic_reference(16000, seconds=1.3), 16000)
    sf.write(str(target), presets.synthetic_reference(22050, seconds=2.0)[::-1].copy(), 22050)
    return source, target


def test_vc_cli(clips, tmp_path):
    from inference.watermark import detect_watermark

    source, target = clips
    out = tmp_path / "sub" / "c.wav"
    result = _run("inference.vc", "--model", "tiny", "--source", source, "--target", target, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    info = sf.info(str(out))
    assert (info.samplerate, info.channels) == (SR, 1)
    assert abs(info.duration - sf.info(str(source)).duration) <= 0.1  # the source's words and timing
    wav, _ = sf.read(str(out), dtype="float32")
    assert np.isfinite(wav).all() and np.abs(wav).max() > 0
    assert detect_watermark(wav, SR) > 0.9  # watermarked by default


def test_vc_cli_missing_source(clips, tmp_path):
    missing, out = tmp_path / "nope.wav", tmp_path / "c.wav"
    result = _run("inference.vc", "--model", "tiny", "--source", missing, "--target", clips[1], "--out", out)
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_tts_cli_with_voice(english, clips, tmp_path, restore_voice):
    voice, out = clips[1], tmp_path / "hello.wav"
    overrides = ["max_new_tokens=10", "watermark=false"]
    result = _run("inference.tts", "--text", "Hello there.", "--out", out, "--voice", voice, *overrides)
    assert result.returncode == 0, result.stderr
    info = sf.info(str(out))
    assert (info.samplerate, info.channels) == (SR, 1)
    wav, _ = sf.read(str(out), dtype="float32")

    # The same settings in this process, cloning the same file: the command used --voice (and config.toml).
    cfg = load_config(TTSConfig, "tts", PROJECT_ROOT / "config.toml", overrides)
    expected = english.generate("Hello there.", cfg.language, voice, cfg.exaggeration, cfg.seed, cfg.watermark,
                                **cfg.sampling())[0].numpy()
    assert len(wav) == len(expected)
    np.testing.assert_allclose(wav, expected, atol=3e-4)  # 16-bit WAV
