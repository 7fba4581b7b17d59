"""Streaming Turbo and Nano: the 2-step meanflow S3Gen chunk by chunk beside its one-shot decode (the same tokens
and noise), a streamed Turbo utterance beside `generate()`, the family's stream settings, the thread counts T3 and
S3Gen run with, and `stop`. Speed is measured in bench/end_to_end.py, not here."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from inference.models.rates import TOKEN_SAMPLES
from inference.models.s3gen.hifigan import draw_source_randomness
from inference.models.s3gen.s3gen import RefDict
from inference.stream_quality import join_jumps, joins_of, snr_db
from inference.streaming import IncrementalStreamer, StreamConfig, last_prompt_tokens

N_TOKENS = 80
FEW = dict(max_new_tokens=30)


class Recording(IncrementalStreamer):
    """Keeps the mel frames it vocodes."""

    def _vocode(self, new_mel, final):
        self.mels = getattr(self, "mels", []) + [new_mel]
        return super()._vocode(new_mel, final)


def streamed(turbo, cfg: StreamConfig, tokens, draws) -> tuple[list[np.ndarray], torch.Tensor]:
    ref = RefDict.from_dict(turbo.conds.gen)
    whole, kept = ref.prompt_feat.shape[1], last_prompt_tokens(ref, cfg.prompt_tokens).prompt_feat.shape[1]
    noise = torch.cat([draws["flow_noise"][:, :, whole - kept:whole], draws["flow_noise"][:, :, whole:]], dim=2)
    streamer = Recording(turbo.s3gen, ref, cfg, **{**draws, "flow_noise": noise})
    chunks, i, k = [], 0, 0
    while i < len(tokens):
        size = cfg.chunk_tokens(k)
        chunks.append(streamer.push(tokens[i:i + size].tolist()))
        i, k = i + size, k + 1
    chunks.append(streamer.finish())
    return [c for c in chunks if len(c)], torch.cat(streamer.mels, dim=2)


def test_meanflow_streams_close_to_one_shot_without_clicks(turbo):
    """The meanflow flow (2 steps on a linear grid, no guidance) streamed with the utterance's noise indexed by
    frame, with Turbo's own settings (the last 50 prompt tokens, 20 of left context): its mel stays near the
    one-shot mel (whole prompt) of the same tokens and noise, far nearer than a fresh draw (bench/end_to_end.py
    measures the whole-prompt settings beside these on the full-size model)."""
    s3gen, ref = turbo.s3gen, RefDict.from_dict(turbo.conds.gen)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 6561, (N_TOKENS,), generator=g)
    draws = {"flow_noise": torch.randn(1, 80, ref.prompt_feat.shape[1] + 2 * N_TOKENS, generator=g)}
    draws["source_phase"], draws["source_noise"] = draw_source_randomness(1, N_TOKENS * TOKEN_SAMPLES,
                                                                          s3gen.mel2wav.cfg, g)
    one_mel = s3gen.flow_inference(tokens, ref, noise=draws["flow_noise"])
    cfg = turbo.stream_config
    assert (cfg.prompt_tokens, cfg.left_context) == (50, 20)
    chunks, mel = streamed(turbo, cfg, tokens, draws)
    assert sum(len(c) for c in chunks) == N_TOKENS * TOKEN_SAMPLES and len(chunks) >= 3
    fresh = s3gen.flow_inference(tokens, ref, generator=torch.Generator().manual_seed(9))
    shared_l1, fresh_l1 = float((mel - one_mel).abs().mean()), float((fresh - one_mel).abs().mean())
    assert shared_l1 < 0.3 and fresh_l1 > 3 * shared_l1, (shared_l1, fresh_l1)
    assert snr_db(one_mel.numpy(), mel.numpy()) > 10
    wav = np.concatenate(chunks)
    assert join_jumps(wav, joins_of(chunks)).max() < 2.0  # a step at a join no larger than the signal's own


def test_a_turbo_stream_is_the_utterance_generate_makes(turbo):
    """The same tokens and the same ending as generate(): Turbo's three silence tokens after each piece's speech,
    so the streamed audio is as long, piece by piece; chunks grow from chunk_size."""
    text = "Hello there [chuckle]. This is a streaming test."
    chunks = list(turbo.generate_stream(text, seed=3, chunk_size=10, max_chars_per_call=30, **FEW))
    audio = np.concatenate([c.audio for c in chunks])
    pieces = ["Hello there [chuckle].", "This is a streaming test."]
    spoken = [len(turbo.generate_speech_tokens(p, seed=3 + i, **FEW)) for i, p in enumerate(pieces)]
    assert len(audio) == (sum(spoken) + 3 * len(pieces)) * TOKEN_SAMPLES
    assert len(turbo.generate(pieces[0], seed=3, watermark=False, **FEW)[0]) == (spoken[0] + 3) * TOKEN_SAMPLES
    assert [c.metrics.index for c in chunks] == list(range(len(chunks))) and np.isfinite(audio).all()


def test_thread_counts_while_t3_runs_ahead_and_after_a_stop(turbo):
    """On a CPU, after the first chunk T3 decodes with its share of the threads in its own thread while S3Gen
    works with the rest; the caller's thread count is back when the stream ends, also when stopped early."""
    before = torch.get_num_threads()
    seen = {"t3": set(), "s3gen": []}
    original_decode, original_push = turbo._decode_piece, IncrementalStreamer.push

    def decode(piece):
        for token in original_decode(piece):
            seen["t3"].add((threading.current_thread().name, torch.get_num_threads()))
            time.sleep(0.05)  # the toy T3 as slow as a real one: still decoding while S3Gen makes the chunks
            yield token

    def push(self, tokens):
        seen["s3gen"].append(torch.get_num_threads())
        return original_push(self, tokens)

    torch.set_num_threads(2)
    try:
        turbo._decode_piece = decode
        IncrementalStreamer.push = push
        stop = threading.Event()
        stream = turbo.generate_stream("One sentence to stream.", seed=1, chunk_size=8, max_new_tokens=80, stop=stop)
        next(stream)
        next(stream)
        stop.set()
        assert list(stream) == []
        assert torch.get_num_threads() == 2
    finally:
        turbo.__dict__.pop("_decode_piece", None)
        IncrementalStreamer.push = original_push
        torch.set_num_threads(before)
    assert ("run-ahead", 1) in seen["t3"] and ("MainThread", 2) in seen["t3"]  # turns, then its own thread
    assert seen["s3gen"][0] == 2 and 1 in seen["s3gen"][1:]  # every thread for the first chunk, then its share


def test_stream_settings_of_the_family(turbo, english):
    """Turbo's streams default to the last 50 prompt tokens and 20 of left context; 0 asks for the whole prompt
    (the config files' spelling); the original model keeps StreamConfig's."""
    assert (turbo.stream_config.prompt_tokens, turbo.stream_config.left_context) == (50, 20)
    assert turbo.stream_settings(prompt_tokens=0)[0].prompt_tokens is None
    assert turbo.stream_settings(prompt_tokens=30)[0].prompt_tokens == 30
    assert english.stream_config == StreamConfig()
    turbo.setup_model(fade_duration=480)
    try:
        assert (turbo.stream_config.prompt_tokens, turbo.stream_config.fade_duration) == (50, 480)
    finally:
        turbo.setup_model()
