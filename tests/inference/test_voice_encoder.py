"""Voice encoder with real GE2E weights on real (espeak-ng synthesized) speech: no mocks.

The pretrained speaker encoder that ships inside the ``resemblyzer`` package has the same architecture
as our VoiceEncoder; only its projection layer is called ``linear`` there. Test speech comes from the
espeak-ng command line synthesizer (22050 Hz mono WAV), with one female and two male voices.
"""
from __future__ import annotations

import importlib.util
import itertools
import shutil
import subprocess
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from inference.checkpoints import CheckpointError, load_strict
from inference.models.voice_encoder import VoiceEncoder

# (espeak voice, words per minute, pitch 0-99)
FEMALE = ("en+f3", 170, 70)
MALES = [("en-us", 170, 45), ("en-gb+m3", 165, 35)]
VOICES = [FEMALE, *MALES]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "She sells sea shells by the sea shore every single summer morning.",
]

# Observed with the resemblyzer weights (espeak-ng 1.51): same voice 0.887 to 0.910,
# female vs male 0.615 to 0.675. The limits below leave a wide margin on both sides.
SAME_VOICE_MIN = 0.8
SEPARATION_MARGIN = 0.1


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


# --- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ge2e_state() -> dict[str, torch.Tensor]:
    """resemblyzer's pretrained.pt, renamed to our VoiceEncoder's parameter names."""
    spec = importlib.util.find_spec("resemblyzer")  # locate without importing (its import pulls in webrtcvad)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the resemblyzer package (source of the pretrained GE2E weights) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        pytest.skip(f"resemblyzer is installed but {path} is missing")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and "model_state" in raw:
        raw = raw["model_state"]
    state = {}
    for key, value in raw.items():
        if key.startswith("linear."):
            key = "proj." + key[len("linear."):]
        state[key] = value
    # Older exports may lack the GE2E similarity scale/offset; they are unused at inference, keep ours.
    defaults = VoiceEncoder().state_dict()
    for key in ("similarity_weight", "similarity_bias"):
        state.setdefault(key, defaults[key].clone())
    return state


@pytest.fixture(scope="module")
def encoder(ge2e_state) -> VoiceEncoder:
    ve = VoiceEncoder().eval()
    load_strict(ve, ge2e_state, "resemblyzer pretrained.pt")
    return ve


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[tuple[str, int], tuple[np.ndarray, int]]:
    """(voice, sentence index) -> (float32 mono waveform, sample rate), synthesized by espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not on PATH (install the Debian package espeak-ng) - no test speech")
    folder = tmp_path_factory.mktemp("espeak")
    clips = {}
    for (voice, speed, pitch), (i, text) in itertools.product(VOICES, enumerate(SENTENCES)):
        out = folder / f"{voice.replace('+', '_')}_{i}.wav"
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
                       check=True, capture_output=True, timeout=60)
        wav, sr = sf.read(out, dtype="float32")
        assert wav.ndim == 1 and len(wav) > sr, f"espeak-ng wrote an unexpected clip for {voice}: {wav.shape}"
        clips[(voice, i)] = (wav, sr)
    return clips


@pytest.fixture(scope="module")
def embeddings(encoder, speech) -> dict[tuple[str, int], torch.Tensor]:
    return {key: encoder.embed_utterance(wav, sr) for key, (wav, sr) in speech.items()}


# --- 1. weights -------------------------------------------------------------------------------------

def test_real_weights_load_strictly(encoder, ge2e_state):
    loaded = encoder.state_dict()
    assert set(loaded) == set(ge2e_state)
    for key, value in ge2e_state.items():
        assert torch.equal(loaded[key], value), key
    # The file really replaced the random initialisation.
    assert not torch.equal(VoiceEncoder().state_dict()["proj.weight"], loaded["proj.weight"])


@pytest.mark.parametrize("dropped", ["proj.bias", "lstm.weight_hh_l2"])
def test_state_dict_missing_a_key_is_rejected(ge2e_state, dropped):
    state = {k: v for k, v in ge2e_state.items() if k != dropped}
    with pytest.raises(CheckpointError) as info:
        load_strict(VoiceEncoder(), state, "broken.pt")
    assert dropped in str(info.value)
    assert "missing" in str(info.value)


def test_resemblyzer_names_without_renaming_are_rejected(ge2e_state):
    state = {("linear." + k[5:] if k.startswith("proj.") else k): v for k, v in ge2e_state.items()}
    with pytest.raises(CheckpointError, match="linear.weight"):
        load_strict(VoiceEncoder(), state, "pretrained.pt")


# --- 2. speaker separation --------------------------------------------------------------------------

def test_same_voice_is_closer_than_female_vs_male(embeddings):
    same = {voice: _cos(embeddings[(voice, 0)], embeddings[(voice, 1)]) for voice, _, _ in VOICES}
    female = FEMALE[0]
    cross = {(female, i, male, j): _cos(embeddings[(female, i)], embeddings[(male, j)])
             for male, _, _ in MALES for i in range(len(SENTENCES)) for j in range(len(SENTENCES))}
    print("\nsame voice, different sentences:")
    for voice, value in same.items():
        print(f"  {voice:10s} {value:.3f}")
    print("female vs male:")
    for (f, i, m, j), value in cross.items():
        print(f"  {f}[{i}] vs {m}[{j}]  {value:.3f}")

    for voice, value in same.items():
        assert value > SAME_VOICE_MIN, f"{voice}: same-voice similarity {value:.3f}"
    # Every same-voice pair beats every female/male pair, by a clear margin.
    assert min(same.values()) > max(cross.values()) + SEPARATION_MARGIN, (same, cross)


def test_speaker_embedding_is_mean_of_utterances(encoder, speech, embeddings):
    voice = FEMALE[0]
    wavs = [speech[(voice, i)][0] for i in range(len(SENTENCES))]
    spk = encoder.embed_speaker(wavs, speech[(voice, 0)][1])
    assert spk.shape == (1, encoder.cfg.embed_size)
    expected = torch.stack([embeddings[(voice, i)] for i in range(len(SENTENCES))]).mean(dim=0)
    torch.testing.assert_close(spk[0], expected)
    # Not re-normalised: the mean of two distinct unit vectors is strictly shorter than 1.
    assert float(spk.norm()) < 0.999


# --- 3. norm and determinism ------------------------------------------------------------------------

def test_utterance_embeddings_are_unit_norm(embeddings, encoder):
    for key, emb in embeddings.items():
        assert emb.shape == (encoder.cfg.embed_size,), key
        assert emb.dtype == torch.float32, key
        assert torch.isfinite(emb).all(), key
        assert abs(float(emb.norm()) - 1.0) < 1e-5, (key, float(emb.norm()))


def test_embedding_is_deterministic(encoder, speech, embeddings):
    key = (MALES[0][0], 0)
    wav, sr = speech[key]
    again = encoder.embed_utterance(wav.copy(), sr)
    assert torch.equal(again, embeddings[key])


# --- 4. sample rate ---------------------------------------------------------------------------------

def test_native_rate_matches_pre_resampled_16k(encoder, speech, embeddings):
    key = (FEMALE[0], 1)
    wav, sr = speech[key]
    assert sr == 22050
    wav16 = librosa.resample(wav, orig_sr=sr, target_sr=encoder.cfg.sample_rate)
    emb16 = encoder.embed_utterance(wav16, encoder.cfg.sample_rate)
    value = _cos(emb16, embeddings[key])
    print(f"\n22050 Hz input vs librosa-resampled 16 kHz input: cos {value:.5f}")
    assert value > 0.98


# --- 5. silence padding -----------------------------------------------------------------------------

def test_silence_padding_is_trimmed(encoder, speech, embeddings):
    key = (MALES[1][0], 0)
    wav, sr = speech[key]
    pad = np.zeros(sr, dtype=np.float32)  # 1 s
    plain: list = []
    padded: list = []
    emb_plain = encoder.embed_utterance(wav, sr, trace=plain)
    emb_padded = encoder.embed_utterance(np.concatenate([pad, wav, pad]), sr, trace=padded)
    assert torch.equal(emb_plain, embeddings[key])
    value = _cos(emb_padded, emb_plain)
    print(f"\n1 s of silence on both sides: cos {value:.5f}")
    assert value > 0.99
    # The trimmed interval moved by the padding (1 s at 16 kHz), give or take one trim hop.
    (start, end), (p_start, p_end) = plain[0].trim_interval, padded[0].trim_interval
    rate = encoder.cfg.sample_rate
    assert abs((p_start - start) - rate) <= 1024, (plain[0].trim_interval, padded[0].trim_interval)
    assert abs((p_end - end) - rate) <= 1024, (plain[0].trim_interval, padded[0].trim_interval)
    assert len(padded[0].mel) - len(plain[0].mel) <= 8  # padding did not reach the network


# --- 6. bad input -----------------------------------------------------------------------------------
# These need the network only to exist, not trained weights or speech.

@pytest.fixture(scope="module")
def bare_encoder() -> VoiceEncoder:
    return VoiceEncoder().eval()


@pytest.mark.parametrize("sample_rate", [16000, 22050])
def test_silent_input_is_rejected(bare_encoder, sample_rate):
    with pytest.raises(ValueError, match="silent"):
        bare_encoder.embed_utterance(np.zeros(2 * sample_rate, dtype=np.float32), sample_rate)


def test_stereo_input_is_rejected(bare_encoder):
    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((2, 32000))).astype(np.float32)
    with pytest.raises(ValueError, match="mono"):
        bare_encoder.embed_utterance(stereo, 16000)


@pytest.mark.parametrize("sample_rate", [16000, 22050])
def test_nan_sample_is_rejected(bare_encoder, sample_rate):
    rng = np.random.default_rng(1)
    wav = (0.1 * rng.standard_normal(2 * sample_rate)).astype(np.float32)
    wav[sample_rate // 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        bare_encoder.embed_utterance(wav, sample_rate)
