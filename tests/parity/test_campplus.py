"""CAMPPlus x-vector (S3Gen `speaker_encoder.`): checkpoint layout, golden parity, input checks."""
import json

import pytest
import torch

from inference.models.s3gen.xvector import CAMPPlus, kaldi_fbank

PREFIX = "speaker_encoder."

CASE = "campplus_xvector"


def test_state_dict_matches_manifest_subtree(parity_dir):
    manifest = json.loads((parity_dir / "manifests" / "s3gen.json").read_text())
    expected = {k[len(PREFIX):]: v for k, v in manifest.items() if k.startswith(PREFIX)}
    with torch.device("meta"):
        module = CAMPPlus()
    ours = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in module.state_dict().items()}
    assert len(expected) == 937
    missing, unexpected = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
    assert not missing and not unexpected, f"missing {missing[:10]}, unexpected {unexpected[:10]}"
    wrong = [(k, ours[k], expected[k]) for k in expected if ours[k] != expected[k]]
    assert not wrong, f"shape/dtype differences: {wrong[:5]}"



def test_batch_rows_are_independent_when_lengths_match():
    torch.manual_seed(0)
    model = CAMPPlus().eval()
    wavs = 0.1 * torch.randn(2, 4000)
    both = model.inference(wavs)
    assert both.shape == (2, 192)
    torch.testing.assert_close(both[1:], model.inference(wavs[1:]), atol=1e-5, rtol=0)


def test_fbank_frame_count_and_shape():
    wav = 0.1 * torch.randn(83856, generator=torch.Generator().manual_seed(1))
    assert kaldi_fbank(wav).shape == (522, 80)  # 1 + (N - 400) // 160 whole frames
    assert kaldi_fbank(wav[:400]).shape == (1, 80)


@pytest.mark.parametrize("wav", [torch.zeros(0), torch.zeros(399)])
def test_fbank_rejects_too_short(wav):
    with pytest.raises(ValueError, match="frame"):
        kaldi_fbank(wav)


@pytest.mark.parametrize("wavs", [torch.zeros(1, 0), torch.zeros(1, 399), [torch.zeros(300)], []])
def test_inference_rejects_empty_or_short(wavs):
    with pytest.raises(ValueError):
        CAMPPlus().eval().inference(wavs)


def test_inference_rejects_wrong_rank():
    with pytest.raises(ValueError, match="shape"):
        CAMPPlus().eval().inference(torch.zeros(1, 1, 16000))
