"""The user-facing TTS API and CLI on the tiny presets: text errors, seeding, token output,
exaggeration and the `python -m inference.tts` command (its settings: test_settings.py)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from inference.chatterbox import ChatterboxTTS
from inference.models.tokenizers import SUPPORTED_LANGUAGES, TextError, normalize_text

SPEECH_VOCAB_END = 6561  # ids >= this are start/stop/specials, never returned
SAMPLES_PER_TOKEN = 960  # 25 speech tokens per second of 24 kHz audio


# --- bad text -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_blank_text(english, text):
    with pytest.raises(TextError):
        english.generate_speech_tokens(text, max_new_tokens=5)


def test_text_longer_than_the_model_takes(english):
    text = "Hello there, this sentence is rather long. " * 20
    assert len(text) > english.t3.cfg.max_text_tokens
    with pytest.raises(TextError, match="Split"):
        english.generate_speech_tokens(text, max_new_tokens=5)


def test_text_at_the_limit_is_accepted(english):
    n = english.t3.cfg.max_text_tokens
    text = "A" * (n - 1)  # normalization appends "."
    ids = english.FAMILY.encode(english.tokenizer, normalize_text(text), None)
    assert len(ids) == n  # the tiny English vocabulary is one token per character
    tokens = english.text_tokens(text)
    assert tokens.shape == (1, n + 2)
    assert tokens[0, 0] == english.t3.cfg.start_text_token and tokens[0, -1] == english.t3.cfg.stop_text_token
    with pytest.raises(TextError, match="Split"):
        english.text_tokens(text + "A")


def test_english_model_rejects_other_languages(english):
    with pytest.raises(TextError):
        english.generate_speech_tokens("Bonjour.", language_id="fr", max_new_tokens=5)
    assert len(english.generate_speech_tokens("Hello.", language_id="en", seed=0, max_new_tokens=5)) <= 5


def test_multilingual_needs_language(multilingual):
    with pytest.raises(TextError):
        multilingual.generate_speech_tokens("Bonjour.", max_new_tokens=5)


def test_multilingual_unknown_language_lists_codes(multilingual):
    with pytest.raises(TextError) as err:
        multilingual.generate_speech_tokens("Bonjour.", language_id="xx", max_new_tokens=5)
    message = str(err.value)
    assert "xx" in message
    for code in SUPPORTED_LANGUAGES:
        assert code in message


def test_multilingual_language_code_is_case_insensitive(multilingual):
    a = multilingual.generate_speech_tokens("Bonjour.", language_id="FR", seed=1, max_new_tokens=10)
    b = multilingual.generate_speech_tokens("Bonjour.", language_id="fr", seed=1, max_new_tokens=10)
    assert torch.equal(a, b)


# --- seeds and output ---------------------------------------------------------------------------------

def test_same_seed_same_tokens(english):
    a = english.generate_speech_tokens("Hello world.", seed=7, max_new_tokens=30)
    b = english.generate_speech_tokens("Hello world.", seed=7, max_new_tokens=30)
    assert len(a) > 0
    assert torch.equal(a, b)


def test_different_seeds_different_tokens(english):
    a = english.generate_speech_tokens("Hello world.", seed=1, max_new_tokens=30)
    b = english.generate_speech_tokens("Hello world.", seed=2, max_new_tokens=30)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_speech_tokens_shape_and_range(english, seed):
    tokens = english.generate_speech_tokens("Hello world.", seed=seed, max_new_tokens=25)
    assert tokens.ndim == 1
    assert tokens.dtype == torch.long
    assert len(tokens) <= 25
    assert (tokens >= 0).all() and (tokens < SPEECH_VOCAB_END).all()


def test_iter_speech_tokens_matches_generate(english):
    streamed = list(english.iter_speech_tokens("Hello world.", seed=5, max_new_tokens=20))
    assert len(streamed) <= 20
    stop = english.t3.cfg.stop_speech_token
    cut = streamed[:streamed.index(stop)] if stop in streamed else streamed
    expected = [t for t in cut if t < SPEECH_VOCAB_END]
    assert english.generate_speech_tokens("Hello world.", seed=5, max_new_tokens=20).tolist() == expected


def test_invalid_sampling_value(english):
    with pytest.raises(ValueError):
        english.generate_speech_tokens("Hello.", temperature=0, max_new_tokens=5)


def test_sampling_defaults_per_family(english, multilingual):
    assert english.sampling_config().repetition_penalty == 1.2
    assert multilingual.sampling_config().repetition_penalty == 2.0
    assert english.sampling_config(repetition_penalty=None, cfg_weight=0).cfg_weight == 0


# --- exaggeration -------------------------------------------------------------------------------------

def test_exaggeration_changes_only_the_emotion_row(english):
    cond = english.conds.t3
    with torch.no_grad():
        low = english.t3.embed_conditioning(cond.with_exaggeration(0.5))
        high = english.t3.embed_conditioning(cond.with_exaggeration(1.5))
    assert low.shape == high.shape == (1, english.t3.cfg.cond_len, english.t3.cfg.hidden_size)
    assert torch.equal(low[:, :-1], high[:, :-1])
    assert not torch.allclose(low[:, -1], high[:, -1])


# --- CLI ----------------------------------------------------------------------------------------------

def _cli(capsys, *args: str) -> SimpleNamespace:
    """`python -m inference.tts ARGS` run in this process (its own model, as the command loads one): the command
    as a subprocess, the user's exact path, is tested in test_synthesis.py (test_tts_cli_with_voice)."""
    from inference import tts

    code = tts.main(list(args))
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def _check_wav(path: Path, token_limit: int) -> np.ndarray:
    """A mono 24 kHz WAV holding no more audio than `token_limit` speech tokens make."""
    assert path.is_file()
    info = sf.info(str(path))
    assert info.format == "WAV"
    assert info.samplerate == 24000
    assert info.channels == 1
    wav, _ = sf.read(str(path), dtype="float32")
    assert wav.ndim == 1
    assert 0 < len(wav) <= token_limit * SAMPLES_PER_TOKEN
    assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0
    assert np.abs(wav).max() > 0  # not silence
    return wav


def test_cli_english(tmp_path, capsys):
    from inference.watermark import detect_watermark

    out = tmp_path / "t.wav"
    result = _cli(capsys, "--text", "Hello world.", "--out", str(out), "max_new_tokens=20")
    assert result.returncode == 0, result.stderr
    wav = _check_wav(out, 20)
    assert "wrote" in result.stdout
    assert detect_watermark(wav, 24000) > 0.9  # config.toml's default: watermarked, and it survives 16-bit WAV


def test_cli_multilingual(tmp_path, capsys):
    from inference.watermark import detect_watermark

    out = tmp_path / "sub" / "fr.wav"
    result = _cli(capsys, "--text", "Bonjour le monde.", "--out", str(out), "--model", "tiny-multilingual",
                  "--language", "fr", "max_new_tokens=20", "watermark=false")
    assert result.returncode == 0, result.stderr
    wav = _check_wav(out, 20)
    assert "no watermark" in result.stdout
    assert detect_watermark(wav, 24000) < 0.1


def test_english_model_has_no_multilingual_preset():
    with pytest.raises(ValueError, match="presets"):
        ChatterboxTTS.from_preset("tiny-multilingual")
