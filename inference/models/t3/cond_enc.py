"""Speaker/prompt/emotion conditioning: the embeddings that precede the text in T3's input (34 for the Llama T3;
for GPT-2 T3, the speaker and the prompt's speech embeddings as they are: 1 + up to 375)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import T3Config


@dataclass
class T3Cond:
    """Conditioning of one voice.

    speaker_emb: (1, 256) voice-encoder embedding. cond_prompt_speech_tokens: (1, <=150) S3 tokens of
    the reference clip. emotion_adv: (1, 1, 1) exaggeration. Field names match the official `conds.pt`.
    """

    speaker_emb: Tensor
    cond_prompt_speech_tokens: Tensor | None = None
    emotion_adv: Tensor | float = 0.5
    clap_emb: Tensor | None = None
    cond_prompt_speech_emb: Tensor | None = None

    def to(self, device=None, dtype=None) -> "T3Cond":
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if torch.is_tensor(v):
                v = v.to(device=device, dtype=dtype if v.is_floating_point() else None)
            moved[f.name] = v
        return T3Cond(**moved)

    def with_exaggeration(self, exaggeration: float) -> "T3Cond":
        return replace(self, emotion_adv=torch.full((1, 1, 1), float(exaggeration), device=self.speaker_emb.device))


class PerceiverAttention(nn.Module):
    """One pre-norm attention block (shared LayerNorm for query and context), no feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.proj_out = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, heads, N, head_dim)

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        q_in, kv_in = self.norm(query), self.norm(context)
        q, k, v = self._split(self.to_q(q_in)), self._split(self.to_k(kv_in)), self._split(self.to_v(kv_in))
        h = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        h = h.transpose(1, 2).reshape(query.shape)
        return query + self.proj_out(h)


class Perceiver(nn.Module):
    """Resamples a variable-length prompt embedding to a fixed number of learned queries.

    The same attention block is applied twice: cross-attention from the queries to the prompt,
    then self-attention over the result (this is how the official weights were trained).
    """

    def __init__(self, num_queries: int, dim: int, heads: int, dropout: float):
        super().__init__()
        self.pre_attention_query = nn.Parameter(torch.empty(1, num_queries, dim))
        bound = (3.0 * 2.0 / (2 * num_queries)) ** 0.5
        nn.init.uniform_(self.pre_attention_query, -bound, bound)
        self.attn = PerceiverAttention(dim, heads, dropout)

    def forward(self, prompt_emb: Tensor) -> Tensor:
        query = self.pre_attention_query.expand(prompt_emb.shape[0], -1, -1)
        h = self.attn(query, prompt_emb)
        return self.attn(h, h)


class CondEncoder(nn.Module):
    def __init__(self, cfg: T3Config):
        super().__init__()
        self.cfg = cfg
        self.spkr_enc = nn.Linear(cfg.speaker_embed_size, cfg.hidden_size)
        if not cfg.is_gpt2:  # Turbo/Nano have neither (their exaggeration has no effect)
            self.emotion_adv_fc = nn.Linear(1, cfg.hidden_size, bias=False)
            self.perceiver = Perceiver(cfg.perceiver_queries, cfg.hidden_size, cfg.perceiver_heads,
                                       cfg.perceiver_dropout)

    def forward(self, speaker_emb: Tensor, prompt_emb: Tensor | None, emotion_adv: Tensor) -> Tensor:
        """speaker_emb (B, 256), prompt_emb (B, P, D) or None, emotion_adv (B, 1, 1) -> (B, cond_len, D)."""
        spk = self.spkr_enc(speaker_emb.view(-1, self.cfg.speaker_embed_size))[:, None]  # (B, 1, D)
        if self.cfg.is_gpt2:
            return spk if prompt_emb is None else torch.cat([spk, prompt_emb.expand(len(spk), -1, -1)], dim=1)
        parts = [spk]
        if prompt_emb is not None:
            parts.append(self.perceiver(prompt_emb))  # (B, 32, D)
        parts.append(self.emotion_adv_fc(emotion_adv.view(-1, 1, 1)))  # (B, 1, D)
        return torch.cat(parts, dim=1)
