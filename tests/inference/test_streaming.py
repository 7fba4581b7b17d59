"""Streaming on the full-size S3Gen with synthetic weights: how close the streamed audio is to the one-shot decode
of the same tokens (stage by stage, since with random weights the flow's full attention makes every frame depend
on the whole utterance), how the joins look, that a chunk's work does not grow, and `generate_stream`.

Measured with these weights (80 tokens, chunk 25, defaults), in comments beside each bound.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from inference.models.s3gen.hifigan import draw_source_randomness
from inference.models.s3gen.s3gen import RefDict, trim_fade
from inference.stream_quality import join_jumps, joins_of, log_mel_l1, snr_db
from inference.streaming import (TOKEN_SAMPLES, IncrementalStreamer, StreamConfig, WindowStreamer, fade_curves,
                                 iterate_ahead, last_prompt_tokens, make_streamer, split_threads, torch_threads)

N_TOKENS = 80


@pytest.fixture(scope="module")
def setup(english):
    """Tokens, the utterance's random draws and the one-shot mel and audio made from them."""
    s3gen, ref = english.s3gen, RefDict.from_dict(english.conds.gen)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 6561, (N_TOKENS,), generator=g)
    frames = ref.prompt_feat.shape[1] + 2 * N_TOKENS
    draws = {"flow_noise": torch.randn(1, 80, frames, generator=g)}
    draws["source_phase"], draws["source_noise"] = draw_source_randomness(1, N_TOKENS * TOKEN_SAMPLES,
                                                                          s3gen.mel2wav.cfg, g)
    mel = s3gen.flow_inference(tokens, ref, noise=draws["flow_noise"])
    wav = s3gen.inference(tokens, ref, flow_noise=draws["flow_noise"], sine_phase=draws["source_phase"],
                          sine_noise=draws["source_noise"])[0].numpy()
    return s3gen, ref, tokens, draws, mel, wav


def stream(streamer, tokens, chunk: int) -> list[np.ndarray]:
    chunks = [streamer.push(tokens[i:i + chunk].tolist()) for i in range(0, len(tokens), chunk)]
    return [c for c in chunks + [streamer.finish()] if len(c)]


class FixedMel(IncrementalStreamer):
    """The incremental streamer fed the one-shot mel, to measure its vocoder stage alone."""

    def __init__(self, *args, mel, **kwargs):
        super().__init__(*args, **kwargs)
        self.one_shot_mel = mel

    def _flow(self, start, n):
        return self.one_shot_mel[:, :, 2 * start:2 * n]


@pytest.mark.parametrize("chunk", [10, 25, 50])
def test_incremental_vocoding_reproduces_the_one_shot_audio(setup, chunk):
    s3gen, ref, tokens, draws, mel, _ = setup
    one_shot, _ = s3gen.mel2wav.inference(mel, phase=draws["source_phase"], noise=draws["source_noise"])
    one_shot = one_shot[0].numpy().copy()
    one_shot[:960] *= trim_fade("cpu").numpy()[:960]
    streamer = FixedMel(s3gen, ref, StreamConfig(chunk_size=chunk), mel=mel, **draws)
    chunks = stream(streamer, tokens, chunk)
    joined = np.concatenate(chunks)
    assert len(joined) == N_TOKENS * TOKEN_SAMPLES
    assert snr_db(one_shot, joined) > 40  # measured 47 dB at chunk 25: the joins are where the rounding differs
    # the naive way (each chunk vocoded alone, its source restarted) is nowhere near
    naive = np.concatenate([s3gen.mel2wav.inference(mel[:, :, i:i + 2 * chunk])[0][0].numpy()
                            for i in range(0, mel.shape[2], 2 * chunk)])
    assert snr_db(one_shot, naive) < 10


def test_flow_frames_decoded_twice_start_from_the_same_noise(setup):
    s3gen, ref, tokens, draws, mel, _ = setup
    streamed = []
    streamer = IncrementalStreamer(s3gen, ref, StreamConfig(chunk_size=25), **draws)
    streamer._vocode = lambda new_mel, final: (streamed.append(new_mel), np.zeros(0, np.float32))[1]
    stream(streamer, tokens, 25)
    streamed = torch.cat(streamed, dim=2)
    assert streamed.shape == mel.shape
    shared = float((streamed - mel).abs().mean())
    fresh = float((s3gen.flow_inference(tokens, ref, generator=torch.Generator().manual_seed(9)) - mel).abs().mean())
    # measured 0.23 vs 1.16 (mean |mel| is 1.0): the remaining gap is the flow's full attention over a cut window
    assert shared < 0.3 and fresh > 3 * shared


@pytest.mark.parametrize("chunk", [25])  # bench/streaming.py covers 10/25/50
def test_incremental_is_closer_to_one_shot_than_window_and_joins_do_not_click(setup, chunk):
    s3gen, ref, tokens, draws, _, one_shot = setup
    incremental = stream(make_streamer(s3gen, ref, StreamConfig(chunk_size=chunk), **draws), tokens, chunk)
    window = stream(make_streamer(s3gen, ref, StreamConfig(strategy="window", chunk_size=chunk),
                                  torch.Generator().manual_seed(1)), tokens, chunk)
    inc, win = np.concatenate(incremental), np.concatenate(window)
    assert len(inc) == len(win) == len(one_shot) == N_TOKENS * TOKEN_SAMPLES
    assert log_mel_l1(one_shot, inc) <= log_mel_l1(one_shot, win)
    for chunks, wav in ((incremental, inc), (window, win)):
        joins = joins_of(chunks)
        assert len(joins) >= 2
        # the step across each join relative to the signal's own 99th-percentile step: measured <= 0.75
        assert join_jumps(wav, joins).max() < 2.0


def test_chunk_work_does_not_grow_with_the_chunk_index(english):
    """A long utterance: after the left context fills, every chunk decodes the same number of frames."""
    s3gen, ref = english.s3gen, RefDict.from_dict(english.conds.gen)
    tokens = torch.randint(0, 6561, (400,), generator=torch.Generator().manual_seed(3))
    streamer = IncrementalStreamer(s3gen, ref, StreamConfig(chunk_size=50, left_context=50))
    streamer._flow = lambda start, n: torch.zeros(1, 80, 2 * (n - start))  # count work, skip the slow ODE
    stream(streamer, tokens, 50)
    middle = streamer.work[2:-1]
    assert len(middle) >= 4
    assert len({w.flow_frames for w in middle}) == 1 and len({w.vocoder_frames for w in middle}) == 1
    assert streamer.work[-1].flow_frames <= middle[0].flow_frames
    window = WindowStreamer(s3gen, ref, StreamConfig(strategy="window", chunk_size=50, context_window=100), None)
    window.s3gen = type("Counting", (), {"inference": lambda self, t, r, **k: torch.zeros(1, len(t) * TOKEN_SAMPLES)})()
    stream(window, tokens, 50)
    assert len({w.flow_frames for w in window.work[2:-1]}) == 1


def test_fades_and_config_errors():
    out, inn = fade_curves("hann", 100)
    assert np.allclose(out + inn, 1) and inn[0] < 0.01 and inn[-1] > 0.99
    out, inn = fade_curves("equal_power", 100)
    assert np.allclose(out ** 2 + inn ** 2, 1)
    with pytest.raises(ValueError, match="strategy"):
        StreamConfig(strategy="magic")
    with pytest.raises(ValueError, match="fade must be"):
        StreamConfig(fade="cubic")
    with pytest.raises(ValueError, match="fade_duration"):
        StreamConfig(fade_duration=100_000)


def test_generate_stream_yields_the_utterance_with_metrics(english):
    chunks = list(english.generate_stream("Hello there. This is a streaming test.", chunk_size=15, seed=3,
                                          max_new_tokens=40, max_chars_per_call=30, prompt_tokens=25))
    assert len(chunks) >= 3
    audio = np.concatenate([c.audio for c in chunks])
    assert audio.dtype == np.float32 and len(audio) % TOKEN_SAMPLES == 0 and np.isfinite(audio).all()
    metrics = [c.metrics for c in chunks]
    assert [m.index for m in metrics] == list(range(len(chunks)))
    assert metrics[-1].total_audio_seconds == pytest.approx(len(audio) / 24000)
    assert all(m.time_to_first_audio == metrics[0].time_to_first_audio for m in metrics)
    assert all(m.compute_seconds > 0 and m.rtf > 0 for m in metrics)
    # the same seed gives the same tokens as generate(): the same length of audio, sentence by sentence
    tokens = sum(len(english.generate_speech_tokens(p, seed=3 + i, max_new_tokens=40))
                 for i, p in enumerate(["Hello there.", "This is a streaming test."]))
    assert len(audio) == tokens * TOKEN_SAMPLES


def test_generate_stream_stops_when_asked(english):
    """The server's cancel path: once `stop` is set no further audio comes, even with T3 tokens made ahead."""
    stop = threading.Event()
    stream = english.generate_stream("Hello there. This is a streaming test.", chunk_size=10, seed=3,
                                     max_new_tokens=40, max_chars_per_call=30, stop=stop, prompt_tokens=25)
    first = next(stream)
    assert len(first.audio) > 0
    stop.set()
    assert list(stream) == []


def test_prompt_tokens_keeps_the_voice_prompts_tail_and_shrinks_every_chunk(english):
    ref = RefDict.from_dict(english.conds.gen)
    n = ref.prompt_token.shape[1]
    short = last_prompt_tokens(ref, 20)
    assert short.prompt_token.shape == (1, 20) and short.prompt_feat.shape[1] == 40
    assert torch.equal(short.prompt_token, ref.prompt_token[:, -20:])
    assert torch.equal(short.prompt_feat, ref.prompt_feat[:, -40:]) and torch.equal(short.embedding, ref.embedding)
    assert int(short.prompt_token_len) == 20 and last_prompt_tokens(ref, n + 5) is ref
    with pytest.raises(ValueError, match="prompt_tokens"):
        StreamConfig(prompt_tokens=0)
    tokens = torch.randint(0, 6561, (60,), generator=torch.Generator().manual_seed(3))
    work = {}
    for prompt in (None, 20):
        streamer = IncrementalStreamer(english.s3gen, ref, StreamConfig(chunk_size=20, prompt_tokens=prompt))
        streamer._flow = lambda start, n: torch.zeros(1, 80, 2 * (n - start))  # count work, skip the ODE
        stream(streamer, tokens, 20)
        work[prompt] = [w.flow_frames for w in streamer.work]
    assert [a - b for a, b in zip(work[None], work[20])] == [2 * (n - 20)] * len(work[20])


@pytest.mark.parametrize("frames", [100, 101])
def test_prompt_tokens_with_odd_and_even_voice_frames(english, frames):
    """embed_ref keeps an odd frame count (one frame past the last token): trimming must still work, with the
    frames aligned to the kept tokens, and the streamer must decode with it."""
    t = np.arange(frames * 480) / 24_000
    wav = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * np.random.default_rng(0).standard_normal(len(t))
    ref = english.s3gen.embed_ref(wav.astype(np.float32), 24_000)
    n = ref.prompt_token.shape[1]
    assert ref.prompt_feat.shape[1] == frames and frames - 2 * n == frames % 2  # the odd case keeps a spare frame
    short = last_prompt_tokens(ref, 20)
    assert short.prompt_token.shape == (1, 20) and short.prompt_feat.shape[1] == 40
    assert torch.equal(short.prompt_feat, ref.prompt_feat[:, 2 * (n - 20): 2 * n])  # aligned with its tokens
    tokens = torch.randint(0, 6561, (30,), generator=torch.Generator().manual_seed(1))
    streamer = IncrementalStreamer(english.s3gen, ref, StreamConfig(chunk_size=15, prompt_tokens=20))
    audio = np.concatenate(stream(streamer, tokens, 15))
    assert len(audio) == 30 * TOKEN_SAMPLES and np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_chunks_double_up_to_the_largest_size():
    assert [StreamConfig(chunk_size=25).chunk_tokens(i) for i in range(5)] == [25, 50, 100, 100, 100]
    assert [StreamConfig(chunk_size=10, max_chunk_size=30).chunk_tokens(i) for i in range(4)] == [10, 20, 30, 30]
    assert {StreamConfig(chunk_size=25, max_chunk_size=25).chunk_tokens(i) for i in range(60)} == {25}
    with pytest.raises(ValueError, match="max_chunk_size"):
        StreamConfig(chunk_size=25, max_chunk_size=10)


def count_pushes(streamer, pushed: list) -> None:
    """Record the size of every push; the flow is skipped (zeros), the vocoder and the bookkeeping run."""
    push = streamer.push

    def counted(tokens):
        pushed.append(len(tokens))
        return push(tokens)

    streamer.push = counted
    streamer._flow = lambda start, n: torch.zeros(1, 80, 2 * (n - start))


def test_utterance_pushes_growing_chunks_across_pieces(english):
    """Tokens fed one by one reach S3Gen in chunks of 10, 20, 40, 40 tokens; a piece's end flushes what is
    pending, and the next piece continues the schedule (the listener has that much audio already)."""
    utterance = english.utterance("One. Two.", chunk_size=10, max_chunk_size=40, prompt_tokens=10, seed=0,
                                  max_chars_per_call=5)
    assert len(utterance.pieces) == 2
    pushed = []
    count_pushes(utterance.streamer, pushed)
    for token in range(35):
        utterance.feed(token)
    assert pushed == [10, 20] and utterance.tokens_to_next_chunk() == 40 - 5
    assert utterance.feed(None) is not None  # the first piece ends: the 5 pending tokens are flushed
    assert pushed == [10, 20, 5]
    count_pushes(utterance.streamer, pushed)  # the second piece's streamer
    for token in range(40):
        utterance.feed(token)
    assert pushed[3:] == [40] and utterance.tokens_to_next_chunk() == 40


def test_generate_stream_gives_the_same_audio_with_and_without_run_ahead(english):
    """Taking turns (the CPU default) and running T3 ahead in its thread with its own thread count decode the
    same tokens; only the summation order of a different thread count may differ."""
    kwargs = dict(chunk_size=12, seed=5, max_new_tokens=40, prompt_tokens=10)
    turns = list(english.generate_stream("Run ahead or take turns.", run_ahead=False, **kwargs))
    ahead = list(english.generate_stream("Run ahead or take turns.", run_ahead=True, **kwargs))
    assert [len(c.audio) for c in turns] == [len(c.audio) for c in ahead] and len(turns) >= 2
    a, b = np.concatenate([c.audio for c in turns]), np.concatenate([c.audio for c in ahead])
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_thread_budgets_when_t3_runs_ahead():
    before = torch.get_num_threads()
    try:
        for total, expected in ((1, (1, 1)), (2, (1, 1)), (8, (2, 6)), (16, (4, 12))):
            torch.set_num_threads(total)
            assert split_threads(torch.device("cpu")) == expected
        assert split_threads(torch.device("cuda")) == (None, None)
        torch.set_num_threads(2)
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        seen, finished = [], threading.Event()
        assert list(iterate_ahead((seen.append(torch.get_num_threads()) or i for i in range(3)), threads=1,
                                  finished=finished)) == [0, 1, 2]
        assert seen == [1, 1, 1] and finished.is_set() and torch.get_num_threads() == 2  # the producer's own count
    finally:
        torch.set_num_threads(before)
