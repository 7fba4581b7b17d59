"""Token encoder of the flow: conformer blocks with relative-position attention, upsampled x2 to the
50 Hz mel frame rate. Pre-norm blocks, no convolution module, LayerNorm eps 1e-12 inside blocks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def relative_positions(length: int, dim: int, device, dtype) -> Tensor:
    """(1, 2*length-1, dim) sinusoids for relative distances length-1 ... -(length-1)."""
    dist = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(2 * length - 1, dim, device=device)
    table[:, 0::2] = torch.sin(dist * freq)
    table[:, 1::2] = torch.cos(dist * freq)
    return table[None].to(dtype)


class InputProjection(nn.Module):
    """Linear + LayerNorm, scaled by sqrt(dim); also returns the relative position table."""

    def __init__(self, dim: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim, eps=1e-5))
        self.scale = math.sqrt(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.out(x) * self.scale
        return x, relative_positions(x.shape[1], x.shape[2], x.device, x.dtype)


class RelPositionAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.head_dim))

    def forward(self, x: Tensor, key_mask: Tensor, pos: Tensor) -> Tensor:
        """x (B, T, D), key_mask (B, 1, T) bool, pos (1, 2T-1, D)."""
        b, t, _ = x.shape
        split = lambda y: y.view(y.shape[0], -1, self.heads, self.head_dim)  # noqa: E731
        q, k, v = split(self.linear_q(x)), split(self.linear_k(x)), split(self.linear_v(x))
        p = split(self.linear_pos(pos)).transpose(1, 2)  # (1, H, 2T-1, d)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, d)
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))  # (B, H, T, T)
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))  # (B, H, T, 2T-1)
        # query i, key j sit at relative distance i-j, which is column (T-1) - i + j of the table
        cols = (t - 1) - torch.arange(t, device=x.device)[:, None] + torch.arange(t, device=x.device)[None]
        position = torch.gather(position, 3, cols.expand(b, self.heads, t, t))
        scores = (content + position) / math.sqrt(self.head_dim)
        blocked = ~key_mask[:, None]  # (B, 1, 1, T)
        attn = torch.softmax(scores.masked_fill(blocked, float("-inf")), dim=-1).masked_fill(blocked, 0.0)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, -1)
        return self.linear_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.self_attn = RelPositionAttention(dim, heads)
        self.feed_forward = FeedForward(dim, hidden)
        self.norm_mha = nn.LayerNorm(dim, eps=1e-12)
        self.norm_ff = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor, key_mask: Tensor, pos: Tensor) -> Tensor:
        x = x + self.self_attn(self.norm_mha(x), key_mask, pos)
        return x + self.feed_forward(self.norm_ff(x))


class LookaheadConv(nn.Module):
    """Lets each token see `lookahead` future tokens (the reason streaming holds back 3 tokens)."""

    def __init__(self, dim: int, lookahead: int = 3):
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(dim, dim, lookahead + 1)
        self.conv2 = nn.Conv1d(dim, dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = F.pad(x.transpose(1, 2), (0, self.lookahead))
        h = F.pad(F.leaky_relu(self.conv1(h)), (2, 0))
        return x + self.conv2(h).transpose(1, 2)


class Upsample2x(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 5)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, 2T): nearest repeat, causal conv."""
        return self.conv(F.pad(x.repeat_interleave(2, dim=2), (4, 0)))


class UpsampleConformerEncoder(nn.Module):
    def __init__(self, dim: int = 512, heads: int = 8, hidden: int = 2048, blocks: int = 6, up_blocks: int = 4):
        super().__init__()
        self.embed = InputProjection(dim)
        self.pre_lookahead_layer = LookaheadConv(dim)
        self.encoders = nn.ModuleList(ConformerBlock(dim, heads, hidden) for _ in range(blocks))
        self.up_layer = Upsample2x(dim)
        self.up_embed = InputProjection(dim)
        self.up_encoders = nn.ModuleList(ConformerBlock(dim, heads, hidden) for _ in range(up_blocks))
        self.after_norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, D) token embeddings -> (B, 2T, D), frame lengths (B,)."""
        mask = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]  # (B, T)
        x, pos = self.embed(x)
        x = self.pre_lookahead_layer(x)
        for block in self.encoders:
            x = block(x, mask[:, None], pos)
        x = self.up_layer(x.transpose(1, 2)).transpose(1, 2)
        lengths = lengths * 2
        mask = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
        x, pos = self.up_embed(x)
        for block in self.up_encoders:
            x = block(x, mask[:, None], pos)
        return self.after_norm(x), lengths
