"""Continuous batching of T3: requests that join and leave a shared batch decode the tokens they decode alone."""
from __future__ import annotations

import threading

import pytest
import torch

from inference.server.batching import Decoding, T3Batcher

TEXTS = ["Hello there, how are you today?", "A second, rather longer sentence to speak out loud here.", "Short."]
SETTINGS = [dict(temperature=0.8, cfg_weight=0.5, seed=1),
            dict(temperature=1.2, cfg_weight=0.0, min_p=0.1, seed=2),  # one row: no classifier-free guidance
            dict(temperature=0.6, cfg_weight=1.0, repetition_penalty=1.5, top_p=0.9, seed=3)]
CAP = 40


def decoding(model, text, settings, out, language, stop=None, cap=CAP):
    settings = dict(settings)
    seed = settings.pop("seed")
    return Decoding(model.conds.t3.with_exaggeration(0.5), model.text_tokens(text, language),
                    model.sampling_config(max_new_tokens=cap, **settings), out.append,
                    torch.Generator().manual_seed(seed), stop)


@pytest.mark.parametrize("family", ["english", "multilingual"])
def test_batched_tokens_equal_solo_tokens(family, english, multilingual):
    """Three requests with different sampling settings join at different steps; each one's tokens equal the
    tokens `generate_tokens` gives it alone (multilingual: with the alignment guard of each request)."""
    model, language = (english, None) if family == "english" else (multilingual, "fr")
    solo = []
    for text, settings in zip(TEXTS, SETTINGS):
        settings = dict(settings)
        seed = settings.pop("seed")
        solo.append(list(model.iter_speech_tokens(text, language, seed=seed, max_new_tokens=CAP, **settings)))
    batcher = T3Batcher(model.t3)
    outs = [[] for _ in TEXTS]
    requests = [decoding(model, t, s, o, language) for t, s, o in zip(TEXTS, SETTINGS, outs)]
    batcher.add(requests[0])
    batcher.step()
    batcher.step()
    batcher.add(requests[1])  # joins a batch whose rows are longer than its own
    batcher.step()
    assert batcher.rows == 3  # 2 rows (guided) + 1 row
    batcher.add(requests[2])
    widest = 0
    while batcher.active:
        widest = max(widest, batcher.rows)
        batcher.step()
    assert widest == 5
    for out, expected in zip(outs, solo):
        assert out[-1] is None and out.count(None) == 1
        assert out[:-1] == expected
    assert batcher.cache is None and batcher.mask is None


TURBO_SETTINGS = [dict(temperature=0.8, seed=1), dict(temperature=1.1, top_k=50, seed=2),
                  dict(temperature=0.6, top_p=0.8, repetition_penalty=1.5, seed=3)]


def test_gpt2_batched_tokens_equal_solo_tokens(turbo):
    """Turbo's GPT-2 T3 batched: one row per request, positions of its own past the left padding, its own
    sampling chain (top-k, the start token penalised at the first step only); the tokens equal the solo ones."""
    cap = 30
    solo = []
    for text, settings in zip(TEXTS, TURBO_SETTINGS):
        settings = dict(settings)
        seed = settings.pop("seed")
        solo.append(list(turbo.iter_speech_tokens(text, seed=seed, max_new_tokens=cap, **settings)))
    assert len({tuple(s) for s in solo}) == 3
    batcher = T3Batcher(turbo.t3)
    outs = [[] for _ in TEXTS]
    requests = []
    for text, settings, out in zip(TEXTS, TURBO_SETTINGS, outs):
        settings = dict(settings)
        seed = settings.pop("seed")
        requests.append(Decoding(turbo.conds.t3, turbo.text_tokens(text), turbo.sampling_config(max_new_tokens=cap,
                                 **settings), out.append, torch.Generator().manual_seed(seed)))
    batcher.add(requests[0])
    batcher.step()
    batcher.add(requests[1])
    batcher.step()
    batcher.add(requests[2])
    assert batcher.rows == 3
    while batcher.active:
        batcher.step()
    for out, expected in zip(outs, solo):
        assert out[-1] is None and out.count(None) == 1
        assert out[:-1] == expected


def test_a_request_leaves_at_its_stop(english):
    """A stopped request leaves the batch at the next step; the others keep decoding their own tokens, and the
    cache loses the padding columns nobody needs any more."""
    solo = list(english.iter_speech_tokens(TEXTS[1], seed=2, max_new_tokens=CAP, temperature=1.2, cfg_weight=0.0,
                                           min_p=0.1))
    batcher = T3Batcher(english.t3)
    stop = threading.Event()
    long_out, stopped_out = [], []
    batcher.add(decoding(english, TEXTS[0] * 3, SETTINGS[0], stopped_out, None, stop))  # the longest prompt
    batcher.add(decoding(english, TEXTS[1], SETTINGS[1], long_out, None))
    batcher.step()
    stop.set()
    batcher.step()
    assert stopped_out[-1] is None and len(batcher.active) == 1
    assert batcher.mask.all(), "the padding of the row that left is dropped"
    assert batcher.cache.layers[0].keys.shape[2] == batcher.mask.shape[1] == batcher.active[0].length
    while batcher.active:
        batcher.step()
    assert long_out[:-1] == solo
