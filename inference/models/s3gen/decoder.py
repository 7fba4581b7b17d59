"""Velocity estimator of the conditional flow matching: a one-level 1-D U-Net with causal
convolutions and transformer blocks, conditioned on time, encoder output, speaker and prompt mel.

The meanflow variant (Turbo, Nano) predicts the mean velocity over a step [t, r]: it embeds both ends with the
same sinusoid and MLP and mixes the two embeddings into one with a bias-free Linear."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalConv1d(nn.Conv1d):
    """Conv1d that only looks back: (kernel - 1) zero frames on the left."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.kernel_size[0] - 1, 0)))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of (B, C, T)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class CausalBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        # indices 0 and 2 are fixed by the checkpoint keys (index 1 was a transpose)
        self.block = nn.Sequential(CausalConv1d(dim, dim_out, 3), nn.Identity(), ChannelLayerNorm(dim_out), nn.Mish())

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.block(x * mask) * mask


class CausalResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_dim, dim_out))
        self.block1 = CausalBlock(dim, dim_out)
        self.block2 = CausalBlock(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: Tensor, mask: Tensor, time: Tensor) -> Tensor:
        h = self.block1(x, mask) + self.mlp(time)[:, :, None]
        return self.block2(h, mask) + self.res_conv(x * mask)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.to_out[0](out.transpose(1, 2).reshape(b, t, -1))


class GELUProjection(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(GELUProjection(dim, hidden), nn.Dropout(0.0), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SelfAttention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, 4 * dim)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x = x + self.attn1(self.norm1(x), bias)
        return x + self.ff(self.norm3(x))


class TimeMLP(nn.Module):
    def __init__(self, dim: int, out: int):
        super().__init__()
        self.linear_1 = nn.Linear(dim, out)
        self.linear_2 = nn.Linear(out, out)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """(B,) flow times in [0, 1] -> (B, dim) sinusoids of 1000 * t."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    arg = 1000 * t[:, None] * freq[None]
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


class ConditionalDecoder(nn.Module):
    def __init__(self, in_channels: int = 320, out_channels: int = 80, channels: int = 256, heads: int = 8,
                 head_dim: int = 64, n_blocks: int = 4, mid_blocks: int = 12, meanflow: bool = False):
        super().__init__()
        self.in_channels = in_channels
        time_dim = 4 * channels

        def stage(dim_in: int, last: nn.Module | None) -> nn.ModuleList:
            parts = [CausalResnetBlock(dim_in, channels, time_dim),
                     nn.ModuleList(TransformerBlock(channels, heads, head_dim) for _ in range(n_blocks))]
            return nn.ModuleList(parts + ([last] if last is not None else []))

        self.time_mlp = TimeMLP(in_channels, time_dim)
        self.down_blocks = nn.ModuleList([stage(in_channels, CausalConv1d(channels, channels, 3))])
        self.mid_blocks = nn.ModuleList(stage(channels, None) for _ in range(mid_blocks))
        self.up_blocks = nn.ModuleList([stage(2 * channels, CausalConv1d(channels, channels, 3))])
        self.final_block = CausalBlock(channels, channels)
        self.final_proj = nn.Conv1d(channels, out_channels, 1)
        # registered last, as in the checkpoint; starts as [I | 0] (end time ignored) until weights are loaded
        self.time_embed_mixer: nn.Linear | None = None
        if meanflow:
            self.time_embed_mixer = nn.Linear(2 * time_dim, time_dim, bias=False)
            nn.init.eye_(self.time_embed_mixer.weight)

    def _embed_time(self, t: Tensor) -> Tensor:
        return self.time_mlp(timestep_embedding(t, self.in_channels).to(t.dtype))

    def time_embedding(self, t: Tensor, r: Tensor | None = None) -> Tensor:
        """Step start times t (B,) and, for meanflow, end times r (B,) -> the (B, 1024) embedding every
        resnet block adds."""
        emb = self._embed_time(t)
        if self.time_embed_mixer is None:
            return emb
        if r is None:
            raise ValueError("a meanflow estimator needs the end time r of the step")
        return self.time_embed_mixer(torch.cat([emb, self._embed_time(r)], dim=1))

    @staticmethod
    def _transformers(blocks: nn.ModuleList, x: Tensor, bias: Tensor) -> Tensor:
        x = x.transpose(1, 2)
        for block in blocks:
            x = block(x, bias)
        return x.transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor, mu: Tensor, t: Tensor, spks: Tensor, cond: Tensor,
                r: Tensor | None = None) -> Tensor:
        """x, mu, cond (B, 80, T); mask (B, 1, T); t, r (B,); spks (B, 80) -> velocity (B, 80, T).
        r (meanflow only) is the step's end time: the output is then the mean velocity over [t, r]."""
        time = self.time_embedding(t, r)
        h = torch.cat([x, mu, spks[:, :, None].expand(-1, -1, x.shape[-1]), cond], dim=1)
        bias = torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill(mask == 0, -1.0e10)
        bias = bias[:, None]  # (B, 1, 1, T): padded frames are never attended to

        resnet, blocks, down = self.down_blocks[0]
        h = self._transformers(blocks, resnet(h, mask, time), bias)
        skip = h
        h = down(h * mask)
        for resnet, blocks in self.mid_blocks:
            h = self._transformers(blocks, resnet(h, mask, time), bias)
        resnet, blocks, up = self.up_blocks[0]
        h = torch.cat([h[:, :, :skip.shape[-1]], skip], dim=1)
        h = self._transformers(blocks, resnet(h, mask, time), bias)
        h = up(h * mask)
        h = self.final_block(h, mask)
        return self.final_proj(h * mask) * mask
