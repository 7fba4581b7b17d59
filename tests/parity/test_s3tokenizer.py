"""S3 speech tokenizer: checkpoint layout, golden parity, batching and input validation."""
import json

import librosa
import numpy as np
import pytest
import torch

from inference.models.s3gen.s3tokenizer import S3Tokenizer, S3TokenizerConfig
from inference.parity.cases import synthetic_s3gen
from inference.parity.golden import load_golden

CHECKPOINT_PREFIX = "tokenizer."

CASE = "s3tokenizer"


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> S3Tokenizer:
    return synthetic_s3gen().tokenizer


@pytest.fixture(scope="module")
def golden(parity_dir):
    return load_golden(parity_dir / "golden" / f"{CASE}.safetensors")


def test_state_dict_matches_manifest(parity_dir, model):
    manifest = json.loads((parity_dir / "manifests" / "s3gen.json").read_text())
    expected = {k[len(CHECKPOINT_PREFIX):]: (tuple(v["shape"]), v["dtype"])
                for k, v in manifest.items() if k.startswith(CHECKPOINT_PREFIX)}
    actual = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert len(expected) == 104
    assert actual == expected


def test_constant_buffers(model):
    cfg = S3TokenizerConfig()
    bank = librosa.filters.mel(sr=16000, n_fft=400, n_mels=128, fmin=0.0, fmax=8000.0)
    assert torch.equal(model._mel_filters, torch.from_numpy(bank))
    n = np.arange(cfg.n_fft)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.n_fft)  # periodic
    assert torch.allclose(model.window.double(), torch.from_numpy(hann), atol=1e-7)

    fresh = S3Tokenizer(S3TokenizerConfig(layers=1))
    fresh._mel_filters.zero_()
    fresh.window.zero_()
    fresh.reset_constants()
    assert torch.equal(fresh._mel_filters, model._mel_filters) and torch.equal(fresh.window, model.window)



def test_batch_of_different_lengths_matches_single_items(model, golden):
    wav = golden.tensors["wav_16k"]
    a, b = wav[:30_000], wav[10_000:]
    tok_a, len_a = model([a])
    tok_b, len_b = model([b.numpy()])  # numpy input is accepted too
    tokens, lens = model([a, b])
    assert lens.tolist() == [len_a.item(), len_b.item()] and tokens.shape == (2, len_b.item())
    assert torch.equal(tokens[0, : len_a.item()], tok_a[0])
    assert torch.equal(tokens[1], tok_b[0])
    assert (tokens[0, len_a.item():] == 0).all()  # padding positions are zeroed

    # A 2-D (batch, samples) tensor is a batch of equal-length rows, as S3Gen.embed_ref passes it.
    rows, row_lens = model(a[None])
    assert torch.equal(rows, tok_a) and torch.equal(row_lens, len_a)


def test_max_len(model, golden):
    wav = golden.tensors["wav_16k"][:16_000]  # 1 s -> 100 mel frames -> 25 tokens
    full, full_len = model([wav])
    assert full_len.tolist() == [25] and full.dtype == torch.int64
    short, short_len = model([wav], max_len=7)
    assert short.shape == (1, 7) and short_len.tolist() == [7]
    longer, longer_len = model([wav], max_len=1000)  # a cap above the length changes nothing
    assert torch.equal(longer, full) and torch.equal(longer_len, full_len)


def test_fsq_token_digits(model):
    fsq = model.quantizer._codebook
    powers = 3 ** torch.arange(8)
    proj = torch.tensor([[-20.0] * 8, [0.0] * 8, [20.0] * 8, [20.0, -20.0, 0, 0, 0, 0, 0, 20.0]])
    digits = fsq.digits(proj)
    assert digits.tolist()[:3] == [[0] * 8, [1] * 8, [2] * 8]
    assert ((digits * powers).sum(-1)).tolist() == [0, 3280, 6560, 2 + 0 + 3 ** 2 + 3 ** 3 + 3 ** 4 + 3 ** 5 + 3 ** 6 + 2 * 3 ** 7]
    # Round half to even: 0.999 * tanh(h) == 0.5 would round to 0 (digit 1), not 1.
    assert torch.round(torch.tensor([0.5, -0.5, 1.5])).tolist() == [0.0, -0.0, 2.0]


@pytest.mark.parametrize("bad, match", [
    ([], "non-empty"),
    ([torch.zeros(0)], "empty"),
    ([torch.zeros(100)], "at least 201 samples"),
    ([torch.zeros(2, 3, 400)], "1-D"),
    ([torch.zeros(4000, dtype=torch.int16)], "float samples"),
    ([torch.full((4000,), float("nan"))], "NaN"),
    (torch.zeros(4000), "2-D"),
])
def test_bad_input_raises(model, bad, match):
    with pytest.raises(ValueError, match=match):
        model(bad)


@pytest.mark.parametrize("max_len", [0, -3, 2.5, True])
def test_bad_max_len_raises(model, max_len):
    with pytest.raises(ValueError, match="max_len"):
        model([torch.zeros(4000)], max_len=max_len)
