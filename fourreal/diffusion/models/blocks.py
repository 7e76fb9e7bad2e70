"""The adaLN-Zero transformer block of the video DiT, and its final layer.

Conditioning is per frame: ``cond [S, F, C]`` modulates every token of frame ``f`` of sequence
``s`` (the timestep, the context of the stream and the frame's known/unknown flag).
"""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from fourreal.diffusion.models.embeddings import apply_rope


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head self-attention over all tokens of a sequence, with RMS-normalized queries and
    keys and 3D rotary positions, through ``scaled_dot_product_attention``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = nn.RMSNorm(width // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(width // heads, eps=1e-6)
        self.out = nn.Linear(width, width)

    def forward(self, x: Float[Tensor, "S L C"], rope: tuple[Tensor, Tensor]) -> Tensor:
        S, L, C = x.shape
        q, k, v = self.qkv(x).reshape(S, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        # the norms run in float32 (their weights are; bf16 autocast leaves them alone)
        q = apply_rope(self.q_norm(q.float()).to(v.dtype), *rope)
        k = apply_rope(self.k_norm(k.float()).to(v.dtype), *rope)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(S, L, C))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class DiTBlock(nn.Module):
    """``x + gate·Attn(mod(LN(x))) `` then ``x + gate·MLP(mod(LN(x)))``; the modulation comes
    from the conditioning through a zero-initialized linear layer, so a new block is the
    identity (adaLN-Zero)."""

    def __init__(self, width: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = SwiGLU(width, mlp_hidden)
        self.ada = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(
        self, x: Float[Tensor, "S F N C"], cond: Float[Tensor, "S F C"], rope: tuple[Tensor, Tensor]
    ) -> Float[Tensor, "S F N C"]:
        S, Fr, N, C = x.shape
        mods = self.ada(cond)[:, :, None].chunk(6, dim=-1)  # each [S, F, 1, C]
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        h = modulate(self.norm1(x), shift1, scale1).reshape(S, Fr * N, C)
        x = x + gate1 * self.attn(h, rope).reshape(S, Fr, N, C)
        h = modulate(self.norm2(x), shift2, scale2)
        return x + gate2 * self.mlp(h)


class FinalLayer(nn.Module):
    """Modulated LayerNorm and a zero-initialized projection to patch values."""

    def __init__(self, width: int, out_features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, out_features)
        for layer in (self.ada, self.proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Float[Tensor, "S F N C"], cond: Float[Tensor, "S F C"]) -> Tensor:
        shift, scale = self.ada(cond)[:, :, None].chunk(2, dim=-1)
        return self.proj(modulate(self.norm(x), shift, scale))
