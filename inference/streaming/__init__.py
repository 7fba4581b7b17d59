"""Streaming synthesis, below the facade and above the models.

streamers: speech tokens -> audio chunks with joins that do not click (StreamConfig, the two strategies);
utterance: one text's pieces and the state that feeds its tokens to a streamer;
runtime: the loop that runs T3 and S3Gen for one stream on this process's threads.
"""
from .runtime import iterate_ahead, run_stream, split_threads, torch_threads
from .streamers import (FADES, FRAME_SAMPLES, STRATEGIES, TOKEN_SAMPLES, ChunkMetrics, ChunkWork,
                        IncrementalStreamer, StreamChunk, StreamClock, StreamConfig, WindowStreamer, fade_curves,
                        last_prompt_tokens, make_streamer)
from .utterance import PieceInputs, Utterance

__all__ = ["FADES", "FRAME_SAMPLES", "STRATEGIES", "TOKEN_SAMPLES", "ChunkMetrics", "ChunkWork", "IncrementalStreamer",
           "PieceInputs", "StreamChunk", "StreamClock", "StreamConfig", "Utterance", "WindowStreamer", "fade_curves",
           "iterate_ahead", "last_prompt_tokens", "make_streamer", "run_stream", "split_threads", "torch_threads"]
