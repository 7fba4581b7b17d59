"""T3: text tokens + voice conditioning -> 25 Hz speech tokens, on a transformers Llama or GPT-2 backbone.

Input sequence of the backbone (inputs_embeds, positions 0..L-1, causal mask only):
    Llama (English, multilingual; RoPE):  [cond (34) | text_emb + text_pos (Lt) | speech_emb + speech_pos (Ls)]
    GPT-2 (Turbo, Nano; GPT-2 adds its own learned positions):  [cond (1 + P) | text_emb (Lt) | speech_emb (Ls)]
There is no padding mask: padded text of a shorter row stays visible to its speech positions, which
is how the official weights were trained.
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache, GPT2Model, LlamaModel
from transformers.initialization import no_init_weights

from .alignment import AlignmentGuard
from .cond_enc import CondEncoder, T3Cond
from .config import T3Config
from .prefix import VoicePrefixCache
from .sampling import SamplingConfig, logits_pipeline

IGNORE_ID = -100


class LearnedPositions(nn.Module):
    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(rows, dim)
        nn.init.normal_(self.emb.weight, std=0.02)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """(length, dim) embeddings of positions offset..offset+length-1."""
        if offset + length > self.emb.num_embeddings:
            raise ValueError(f"position {offset + length - 1} is past the table ({self.emb.num_embeddings} rows)")
        return self.emb(torch.arange(offset, offset + length, device=self.emb.weight.device))


@dataclass
class T3Output:
    cond_emb: Tensor  # (B or 1, cond_len, D)
    hidden_states: Tensor  # (B, L, D), final RMSNorm output
    text_logits: Tensor  # (B, Lt, text_vocab), zero past each row's length
    speech_logits: Tensor  # (B, Ls, speech_vocab), zero past each row's length


@dataclass
class StepTrace:
    """What one decoding step saw; only collected when a caller asks (parity, debugging)."""

    step_logits: Tensor  # (rows, V) speech-head logits of the backbone call
    stages: dict  # intermediates of the logits pipeline


# chooser(probs (1, V)) -> token id
Chooser = Callable[[Tensor], int]


class T3(nn.Module):
    def __init__(self, cfg: T3Config | None = None, *, init_weights: bool = True):
        """`init_weights=False` skips random initialisation (seconds for the full model) when a state
        dict is loaded right after."""
        super().__init__()
        self.cfg = cfg = cfg or T3Config.english()
        with contextlib.nullcontext() if init_weights else no_init_weights():
            if cfg.is_gpt2:
                self.tfmr = GPT2Model(cfg.gpt2_config())
                # GPT-2's token table is never used (inputs are embeddings), yet the official files hold it and
                # the reference loads them strictly before deleting it: checked and skipped on load, written back
                # as zeros on save (inference/checkpoints.py)
                self.unused_checkpoint_keys = {"tfmr.wte.weight": tuple(self.tfmr.wte.weight.shape)}
                del self.tfmr.wte
            else:
                self.tfmr = LlamaModel(cfg.llama_config())
            self.cond_enc = CondEncoder(cfg)
            self.text_emb = nn.Embedding(cfg.text_vocab_size, cfg.hidden_size)
            self.speech_emb = nn.Embedding(cfg.speech_vocab_size, cfg.hidden_size)
            if not cfg.is_gpt2:
                self.text_pos_emb = LearnedPositions(cfg.text_pos_rows, cfg.hidden_size)
                self.speech_pos_emb = LearnedPositions(cfg.speech_pos_rows, cfg.hidden_size)
            self.text_head = nn.Linear(cfg.hidden_size, cfg.text_vocab_size, bias=False)
            self.speech_head = nn.Linear(cfg.hidden_size, cfg.speech_vocab_size, bias=cfg.is_gpt2)
        # the multilingual alignment analyzer runs where this is set (the loader turns it off for v3, kit 7.11)
        self.alignment_guard = cfg.is_multilingual
        self.voice_prefixes = VoicePrefixCache()

    @property
    def device(self) -> torch.device:
        return self.speech_emb.weight.device

    # ---------------------------------------------------------------- embeddings
    def embed_speech(self, tokens: Tensor, offset: int = 0) -> Tensor:
        """(B, Ls) ids -> (B, Ls, D) token + learned position embeddings, positions from `offset` (GPT-2: the token
        embeddings only; the backbone adds positions)."""
        if self.cfg.is_gpt2:
            return self.speech_emb(tokens)
        return self.speech_emb(tokens) + self.speech_pos_emb(tokens.shape[1], offset)

    def embed_text(self, text_tokens: Tensor) -> Tensor:
        text = self.text_emb(text_tokens)
        return text if self.cfg.is_gpt2 else text + self.text_pos_emb(text_tokens.shape[1])

    def embed_conditioning(self, cond: T3Cond) -> Tensor:
        prompt_emb = cond.cond_prompt_speech_emb
        if prompt_emb is None and cond.cond_prompt_speech_tokens is not None:
            prompt = cond.cond_prompt_speech_tokens.to(self.device).long()
            if prompt.shape[-1] > self.cfg.speech_cond_prompt_len:
                raise ValueError(f"prompt has {prompt.shape[-1]} speech tokens; at most "
                                 f"{self.cfg.speech_cond_prompt_len} are allowed")
            prompt_emb = self.embed_speech(torch.atleast_2d(prompt))
        if cond.clap_emb is not None:
            raise ValueError("CLAP conditioning is not part of the Chatterbox models")
        emotion = cond.emotion_adv
        if not torch.is_tensor(emotion):
            emotion = torch.tensor(float(emotion))
        dtype = self.speech_emb.weight.dtype
        return self.cond_enc(cond.speaker_emb.to(self.device, dtype), prompt_emb,
                             emotion.to(self.device, dtype))

    def embed_inputs(self, cond: T3Cond, text_tokens: Tensor, speech_tokens: Tensor,
                     zero_text_of_row1: bool = False) -> tuple[Tensor, Tensor]:
        """-> (inputs_embeds (B, 34+Lt+Ls, D), cond_emb).

        `zero_text_of_row1` builds the unconditional CFG row: its text token embeddings are zeroed
        but its text position embeddings stay.
        """
        self._check_text(text_tokens, markers=not self.cfg.is_gpt2)
        cond_emb = self.embed_conditioning(cond)
        text = self.text_emb(text_tokens)
        if zero_text_of_row1:
            text = torch.cat([text[:1], torch.zeros_like(text[1:2]), text[2:]])
        if not self.cfg.is_gpt2:
            text = text + self.text_pos_emb(text_tokens.shape[1])
        speech = self.embed_speech(speech_tokens)
        b = text.shape[0]
        embeds = torch.cat([cond_emb.expand(b, -1, -1), text, speech], dim=1)
        return embeds, cond_emb

    def _check_text(self, text_tokens: Tensor, markers: bool = True) -> None:
        """`markers`: every row must hold the start/stop text tokens (the Llama families, as the reference asserts).
        GPT-2 T3 takes the BPE ids alone, in teacher forcing too: `inference_turbo` feeds them unwrapped, and
        training must show the model what synthesis will."""
        if text_tokens.ndim != 2:
            raise ValueError(f"text_tokens must be (batch, length), got shape {tuple(text_tokens.shape)}")
        if text_tokens.shape[1] > self.cfg.text_pos_rows:
            raise ValueError(f"text is {text_tokens.shape[1]} tokens long; the model takes at most "
                             f"{self.cfg.max_text_tokens} plus start/stop")
        if text_tokens.numel() and (int(text_tokens.max()) >= self.cfg.text_vocab_size or int(text_tokens.min()) < 0):
            raise ValueError(f"text token ids must be in [0, {self.cfg.text_vocab_size}); "
                             "is the tokenizer of the other model (English vs multilingual)?")
        for row in text_tokens if markers else ():
            if not (row == self.cfg.start_text_token).any() or not (row == self.cfg.stop_text_token).any():
                raise ValueError("every text row needs the start-of-text and stop-of-text tokens")

    # ---------------------------------------------------------------- teacher forcing
    def forward(self, cond: T3Cond, text_tokens: Tensor, text_token_lens: Tensor,
                speech_tokens: Tensor, speech_token_lens: Tensor, packed: bool = False) -> T3Output:
        """Teacher-forced logits (B, Lt, Vtext) and (B, Ls, Vspeech); positions past a row's length are zeroed.

        Unpacked (the reference's layout, which the parity goldens hold), a row with shorter text keeps its text
        padding between text and speech, so its speech sees pad tokens and sits at shifted positions.
        `packed=True` lays every row out as decoding sees it, [cond, text_i, speech_i] with the padding at the
        end, which is what training must use; the outputs come back in the same padded layout.
        """
        self._check_text(text_tokens, markers=not self.cfg.is_gpt2)
        embeds, cond_emb = self.embed_inputs(cond, text_tokens, speech_tokens)
        len_cond, lt, ls = cond_emb.shape[1], text_tokens.shape[1], speech_tokens.shape[1]
        dev = embeds.device
        text_lens, speech_lens = text_token_lens.to(dev), speech_token_lens.to(dev)
        if packed:
            # packed position p of row i holds padded position order[i, p]
            total = len_cond + lt + ls
            p = torch.arange(total, device=dev)[None]
            text_end = len_cond + text_lens[:, None]
            order = torch.where(p < text_end, p, p - text_end + len_cond + lt).clamp(max=total - 1)
            packed_h = self.tfmr(inputs_embeds=embeds.gather(1, order[..., None].expand_as(embeds)),
                                 use_cache=False).last_hidden_state
            text_at = (len_cond + torch.arange(lt, device=dev))[None].expand(len(order), -1)
            speech_at = (text_end + torch.arange(ls, device=dev)[None]).clamp(max=total - 1)
            pick = lambda at: packed_h.gather(1, at[..., None].expand(-1, -1, packed_h.shape[-1]))  # noqa: E731
            hidden, text_h, speech_h = packed_h, pick(text_at), pick(speech_at)
        else:
            hidden = self.tfmr(inputs_embeds=embeds, use_cache=False).last_hidden_state  # (B, L, D)
            text_h = hidden[:, len_cond:len_cond + lt]
            speech_h = hidden[:, len_cond + lt:len_cond + lt + ls]
        text_valid = torch.arange(lt, device=dev)[None] < text_lens[:, None]
        speech_valid = torch.arange(ls, device=dev)[None] < speech_lens[:, None]
        text_h = text_h * text_valid[..., None]
        speech_h = speech_h * speech_valid[..., None]
        return T3Output(cond_emb, hidden, self.text_head(text_h), self.speech_head(speech_h))

    def loss(self, cond: T3Cond, text_tokens: Tensor, text_token_lens: Tensor,
             speech_tokens: Tensor, speech_token_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Next-token cross-entropy on text and speech, padding ignored, rows packed as decoding sees them.
        Returns (loss_text, loss_speech)."""
        out = self.forward(cond, text_tokens, text_token_lens, speech_tokens, speech_token_lens, packed=True)
        lt, ls = text_tokens.shape[1], speech_tokens.shape[1]
        dev = text_tokens.device
        text_target = text_tokens.masked_fill(torch.arange(lt, device=dev)[None] >= text_token_lens[:, None], IGNORE_ID)
        speech_target = speech_tokens.masked_fill(
            torch.arange(ls, device=dev)[None] >= speech_token_lens[:, None], IGNORE_ID)
        # logits at position t predict token t+1
        loss_text = F.cross_entropy(out.text_logits[:, :-1].transpose(1, 2), text_target[:, 1:], ignore_index=IGNORE_ID)
        loss_speech = F.cross_entropy(out.speech_logits[:, :-1].transpose(1, 2), speech_target[:, 1:],
                                      ignore_index=IGNORE_ID)
        return loss_text, loss_speech

    # ---------------------------------------------------------------- decoding
    def decoding_prompt(self, cond: T3Cond, text_tokens: Tensor, use_cfg: bool) -> tuple[Tensor, tuple[int, int]]:
        """The first step's input: (rows, L, D) embeddings (row 1 unconditional with CFG) and where the text sits.

        The Llama reference appends the start-of-speech embedding a second time before the first step; GPT-2's
        prompt ends with a single one."""
        if use_cfg and self.cfg.is_gpt2:
            raise ValueError("Turbo/Nano T3 has no classifier-free guidance (cfg_weight must be 0)")
        rows = 2 if use_cfg else 1
        start = torch.full((rows, 1), self.cfg.start_speech_token, dtype=torch.long, device=self.device)
        embeds, cond_emb = self.embed_inputs(cond, text_tokens.expand(rows, -1), start, zero_text_of_row1=use_cfg)
        len_cond = cond_emb.shape[1]
        if not self.cfg.is_gpt2:
            embeds = torch.cat([embeds, self.embed_speech(start)], dim=1)
        return embeds, (len_cond, len_cond + text_tokens.shape[1])

    def start_cache(self, embeds: Tensor, text_slice: tuple[int, int]) -> tuple[DynamicCache, Tensor]:
        """(cache, what the first step still runs) for `decoding_prompt`'s embeddings: GPT-2 T3 takes the voice's
        conditioning from `voice_prefixes` (computed once per voice); Llama T3 runs it all (its conditioning is
        short, and the alignment guard watches the first step's attention over the whole prompt)."""
        if not self.cfg.is_gpt2:
            return DynamicCache(config=self.tfmr.config), embeds
        cond_len = text_slice[0]
        return self.voice_prefixes.cache_for(self.tfmr, embeds[:, :cond_len]), embeds[:, cond_len:]

    def speech_room(self, prompt_len: int) -> int:
        """How many tokens decoding may emit before the position table ends (Llama: the speech table; GPT-2: the one
        table the prompt shares)."""
        if self.cfg.is_gpt2:
            return self.cfg.gpt2_positions - prompt_len
        return self.cfg.speech_pos_rows - 1

    def decoding_over(self, token: int, emitted: int, sampling: SamplingConfig, room: int | None = None) -> bool:
        """The stop rule of every decoding loop (alone or batched): the stop token, or `emitted` tokens reaching
        `max_new_tokens` or the end of the position table (`room`, see speech_room). GPT-2 T3 does not stop on
        the first token, which its reference samples before its loop starts checking."""
        room = self.cfg.speech_pos_rows - 1 if room is None else room
        stopped = token == self.cfg.stop_speech_token and not (self.cfg.is_gpt2 and emitted == 1)
        return stopped or emitted >= min(sampling.max_new_tokens, room)

    @torch.inference_mode()
    def generate_tokens(self, cond: T3Cond, text_tokens: Tensor, sampling: SamplingConfig = SamplingConfig(),
                        generator: torch.Generator | None = None, choose: Chooser | None = None,
                        on_step: Callable[[StepTrace], None] | None = None) -> Iterator[int]:
        """Yields speech token ids one by one, ending with the stop token if it was produced.

        text_tokens: (1, Lt) or (Lt,) ids (Llama: with start/stop text tokens). With cfg_weight > 0 a second,
        unconditional row is decoded alongside (text embeddings zeroed). `choose` replaces
        multinomial sampling (parity feeds recorded tokens); `on_step` receives each step's trace.
        """
        cfg = self.cfg
        text_tokens = torch.atleast_2d(text_tokens).long().to(self.device)[:1]
        use_cfg = sampling.cfg_weight > 0
        rows = 2 if use_cfg else 1
        embeds, text_slice = self.decoding_prompt(cond, text_tokens, use_cfg)
        room = self.speech_room(embeds.shape[1])
        guard = AlignmentGuard(self.tfmr, cfg.alignment_heads, text_slice, cfg.stop_speech_token) \
            if self.alignment_guard else None
        history = [cfg.start_speech_token]
        pipeline = logits_pipeline(cfg, sampling, guard=(lambda x: guard.step(x, history[-1])) if guard else None)
        if choose is None:
            def choose(probs: Tensor) -> int:
                return int(torch.multinomial(probs, 1, generator=generator))

        cache, embeds = self.start_cache(embeds, text_slice)
        try:
            for step in itertools.count():
                hidden = self.tfmr(inputs_embeds=embeds, cache=cache, use_cache=True).last_hidden_state
                logits = self.speech_head(hidden[:, -1]).float()  # (rows, V)
                trace = {} if on_step else None
                # GPT-2 T3 penalises the start token at the first step only (its history is then the tokens made)
                seen = history[1:] if cfg.is_gpt2 and step else history
                probs = pipeline(logits[:1], logits[1:2] if use_cfg else None,
                                 torch.tensor([seen], device=self.device), trace)
                if on_step:
                    on_step(StepTrace(logits, trace))
                token = choose(probs)
                history.append(token)
                yield token
                if self.decoding_over(token, step + 1, sampling, room):
                    return
                embeds = self.embed_speech(torch.full((rows, 1), token, device=self.device), offset=step + 1)
        finally:
            if guard is not None:
                guard.close()

    def inference(self, cond: T3Cond, text_tokens: Tensor, sampling: SamplingConfig = SamplingConfig(),
                  generator: torch.Generator | None = None) -> Tensor:
        """All generated ids as a (1, n) tensor (stop token included when produced)."""
        ids = list(self.generate_tokens(cond, text_tokens, sampling, generator=generator))
        return torch.tensor([ids], dtype=torch.long, device=self.device)
