"""The base video model: a pixel-space video DiT over one sequence of frames (paper §3.1).

It is also the *block stack* the two-stream model runs (:class:`BlockStack`): the two-stream
model calls :meth:`VideoDiT.embed`, :meth:`VideoDiT.condition`, :meth:`VideoDiT.block` and
:meth:`VideoDiT.head` on its own sequences, so both streams use the same weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from fourreal.diffusion.models.blocks import DiTBlock, FinalLayer
from fourreal.diffusion.models.embeddings import (
    TimestepEmbedder,
    patchify,
    rope_tables,
    unpatchify,
)
from fourreal.errors import ShapeError

Context = Literal["freeze", "dynamic"]
CONTEXTS: tuple[Context, ...] = ("freeze", "dynamic")


@dataclass(frozen=True)
class DiTConfig:
    """Sizes of the video DiT. Frames are ``channels × H × W`` with H, W multiples of
    ``patch``; attention heads have ``width / heads`` channels (a multiple of 6 works best for
    the 3D rotary split)."""

    width: int = 256
    depth: int = 6
    heads: int = 4
    patch: int = 4
    mlp_ratio: float = 4.0
    channels: int = 3
    rope_theta: float = 10_000.0

    def __post_init__(self) -> None:
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ShapeError(
                f"DiTConfig: width {self.width} must split into {self.heads} heads of an even "
                "number of channels"
            )

    @property
    def mlp_hidden(self) -> int:
        return int(self.width * self.mlp_ratio)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CONFIGS: dict[str, DiTConfig] = {
    # CPU tests, the bundled demo checkpoint: ≈ 9M parameters
    "tiny": DiTConfig(width=256, depth=6, heads=4, patch=4),
    # ≈ 70M parameters
    "small": DiTConfig(width=512, depth=12, heads=8, patch=4),
    # the paper's base video model: 24 blocks × 1024 channels (≈ 0.56B parameters; design §4)
    "base": DiTConfig(width=1024, depth=24, heads=16, patch=8),
}


class BlockStack(Protocol):
    """What :class:`~fourreal.diffusion.models.two_stream.TwoStreamDiT` needs of a video model.

    Tokens are ``[S, F, N, C]``: ``S`` sequences of ``F`` frames of ``N`` tokens. ``condition``
    returns whatever the stack's blocks take as conditioning for such sequences.
    """

    num_blocks: int
    width: int

    def embed(self, frames: Tensor) -> Tensor: ...

    def condition(
        self, sigma: Tensor, known: Tensor, context: Context, size: tuple[int, int]
    ) -> Any: ...

    def block(self, index: int, tokens: Tensor, cond: Any) -> Tensor: ...

    def head(self, tokens: Tensor, cond: Any) -> Tensor: ...


class VideoDiT(nn.Module):
    """Pixel-space video DiT: patchify, adaLN-Zero blocks with full self-attention over all
    tokens of a sequence, 3D rotary positions over (frame, y, x), timestep embedding, two
    context embeddings (freeze-time, dynamic) and a per-frame known/unknown flag.

    The model predicts the rectified-flow velocity (``noise − clean``, see
    :mod:`fourreal.diffusion.schedulers.rectified_flow`) of every frame.
    """

    def __init__(self, config: DiTConfig = CONFIGS["tiny"]) -> None:
        super().__init__()
        self.config = config
        C, p = config.width, config.patch
        self.num_blocks = config.depth
        self.width = C
        self.patch_embed = nn.Linear(config.channels * p * p, C)
        self.time_embed = TimestepEmbedder(C)
        self.context_embed = nn.Embedding(len(CONTEXTS), C)
        self.known_embed = nn.Embedding(2, C)
        self.blocks = nn.ModuleList(
            DiTBlock(C, config.heads, config.mlp_hidden) for _ in range(config.depth)
        )
        self.final = FinalLayer(C, config.channels * p * p)
        self._rope_cache: dict[tuple[int, int, int, str], tuple[Tensor, Tensor]] = {}
        for module in (self.context_embed, self.known_embed):
            nn.init.normal_(module.weight, std=0.02)

    @property
    def size_multiple(self) -> int:
        """Frame heights and widths must be multiples of the patch size."""
        return self.config.patch

    # ------------------------------------------------------------------ the block-stack API

    def embed(self, frames: Float[Tensor, "S F C H W"]) -> Float[Tensor, "S F N D"]:
        p = self.config.patch
        if frames.shape[-1] % p or frames.shape[-2] % p:
            raise ShapeError(
                f"frames of {frames.shape[-2]}x{frames.shape[-1]} are not a multiple of the "
                f"patch size {p}; pad them first (GridPipeline does)"
            )
        return self.patch_embed(patchify(frames, p))

    def condition(
        self,
        sigma: Float[Tensor, " S"],
        known: Bool[Tensor, "S F"],
        context: Context,
        size: tuple[int, int],
    ) -> dict[str, Any]:
        """Conditioning of ``S`` sequences of frames of ``size = (H, W)``: per-frame vectors
        ``[S, F, C]`` (timestep + context + known flag, SiLU'd) and the patch grid."""
        emb = self.time_embed(sigma)[:, None]
        emb = emb + self.context_embed.weight[CONTEXTS.index(context)]
        emb = emb + self.known_embed(known.long())
        return {"cond": nn.functional.silu(emb), "size": size}

    def block(
        self, index: int, tokens: Float[Tensor, "S F N D"], cond: dict[str, Tensor]
    ) -> Float[Tensor, "S F N D"]:
        return self.blocks[index](tokens, cond["cond"], self._rope(tokens, cond["size"]))

    def head(
        self, tokens: Float[Tensor, "S F N D"], cond: dict[str, Any]
    ) -> Float[Tensor, "S F C H W"]:
        out = self.final(tokens, cond["cond"])
        return unpatchify(out.float(), self.config.patch, *cond["size"])

    def _rope(self, tokens: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        _, frames, N, _ = tokens.shape
        h, w = size[0] // self.config.patch, size[1] // self.config.patch
        if h * w != N:
            raise ShapeError(f"{N} tokens per frame do not match the patch grid {h}x{w}")
        key = (frames, h, w, str(tokens.device))
        if key not in self._rope_cache:
            head_dim = self.config.width // self.config.heads
            cos, sin = rope_tables(frames, h, w, head_dim, self.config.rope_theta)
            self._rope_cache[key] = (cos.to(tokens.device), sin.to(tokens.device))
        return self._rope_cache[key]

    # ------------------------------------------------------------------ one video

    def forward(
        self,
        frames: Float[Tensor, "B F C H W"],
        sigma: Float[Tensor, " B"],
        known: Bool[Tensor, "B F"],
        context: Context = "dynamic",
    ) -> Float[Tensor, "B F C H W"]:
        """Velocity of every frame of ``B`` videos (inputs in [-1, 1]; known frames clean)."""
        cond = self.condition(sigma, known, context, tuple(frames.shape[-2:]))
        x = self.embed(frames)
        for index in range(self.num_blocks):
            x = self.block(index, x, cond)
        return self.head(x, cond)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_on_meta(config: DiTConfig) -> VideoDiT:
    """The model with parameters on the meta device (no memory): for counting parameters."""
    with torch.device("meta"):
        return VideoDiT(config)
