"""A pretrained diffusers video transformer (Wan 2.1 family) as the block stack of the
two-stream model (design.md §4, "pretrained bases").

:class:`WanStack` runs ``WanTransformer3DModel``'s own layers block by block on the token
sequences the two-stream model hands it: patch embedding, timestep and text conditioning,
3D rotary positions, the blocks and the output head, in latent space (see
:class:`fourreal.diffusion.pipelines.latent.WanVAECodec`). Run on one video it computes exactly
what the transformer's ``forward`` computes. Wan has no known-frame flags: it is meant for the
``renoise`` conditioning of :class:`~fourreal.diffusion.pipelines.GridPipeline`. The two
contexts are text embeddings (``[L, text_dim]``) given to the stack, e.g. precomputed prompt
embeddings of a freeze-time and a dynamic caption; zeros by default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fourreal.diffusion.models.dit import Context
from fourreal.errors import FourrealError


class WanStack(nn.Module):
    """``WanTransformer3DModel`` as a :class:`~fourreal.diffusion.models.dit.BlockStack`."""

    def __init__(self, transformer: nn.Module, contexts: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        config = transformer.config
        frames_per_patch, _, self.patch = tuple(config.patch_size)
        if frames_per_patch != 1:
            raise FourrealError(
                f"the Wan transformer patches {frames_per_patch} frames together; the grid "
                "needs per-frame tokens (patch_size (1, p, p))"
            )
        if getattr(config, "image_dim", None) is not None:
            raise FourrealError("image-conditioned Wan transformers (I2V) are not supported")
        self.transformer = transformer
        self.num_blocks = len(transformer.blocks)
        self.width = config.num_attention_heads * config.attention_head_dim
        contexts = contexts or {}
        for name in ("freeze", "dynamic"):
            text = contexts.get(name, torch.zeros(1, config.text_dim))
            if text.ndim != 2 or text.shape[1] != config.text_dim:
                raise FourrealError(
                    f"the {name} context must be [L, {config.text_dim}] text embeddings, got "
                    f"{list(text.shape)}"
                )
            self.register_buffer(f"context_{name}", text.float(), persistent=False)

    def embed(self, latents: Tensor) -> Tensor:
        """``[S, F, C, h, w]`` latents to ``[S, F, N, D]`` tokens (the Conv3d patch embedding)."""
        x = self.transformer.patch_embedding(latents.transpose(1, 2))  # [S, D, F, h', w']
        return x.flatten(3).permute(0, 2, 3, 1)

    def condition(
        self, sigma: Tensor, known: Tensor, context: Context, size: tuple[int, int]
    ) -> dict[str, Any]:
        text = getattr(self, f"context_{context}")
        text = text[None].expand(sigma.shape[0], -1, -1)
        temb, proj, text, _ = self.transformer.condition_embedder(sigma * 1000, text, None)
        return {"temb": temb, "proj": proj.unflatten(1, (6, -1)), "text": text, "size": size}

    def block(self, index: int, tokens: Tensor, cond: dict[str, Any]) -> Tensor:
        S, F, N, D = tokens.shape
        shape = (1, 1, F, *cond["size"])  # only its shape matters to the rotary embedding
        rotary = self.transformer.rope(torch.empty(shape, device="meta"))
        rotary = tuple(r.to(tokens.device) for r in rotary)
        out = self.transformer.blocks[index](
            tokens.reshape(S, F * N, D), cond["text"], cond["proj"], rotary
        )
        return out.reshape(S, F, N, D)

    def head(self, tokens: Tensor, cond: dict[str, Any]) -> Tensor:
        model = self.transformer
        S, F, N, D = tokens.shape
        shift, scale = (model.scale_shift_table + cond["temb"][:, None]).chunk(2, dim=1)
        h = model.norm_out(tokens.reshape(S, F * N, D).float()) * (1 + scale) + shift
        h = model.proj_out(h.type_as(tokens))
        hh, ww = cond["size"][0] // self.patch, cond["size"][1] // self.patch
        p = self.patch
        h = h.reshape(S, F, hh, ww, p, p, -1).permute(0, 1, 6, 2, 4, 3, 5)
        return h.reshape(S, F, -1, hh * p, ww * p)
