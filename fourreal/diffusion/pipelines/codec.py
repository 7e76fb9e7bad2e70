"""What the model works on: pixels (the base model) or latents (pretrained adapters).

A codec maps frames ``[N, 3, H, W]`` in [0, 1] to the model's space and back, and says what
frame sizes it needs.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class Codec(Protocol):
    size_multiple: int
    """Frame heights and widths must be multiples of this (frames are padded to it)."""

    def encode(self, frames: Tensor) -> Tensor: ...

    def decode(self, values: Tensor) -> Tensor: ...

    def project(self, values: Tensor) -> Tensor:
        """Generated values made valid (what decoding keeps), before other windows take them
        as conditions."""
        ...


class PixelCodec:
    """Pixel space: values in [-1, 1]."""

    def __init__(self, size_multiple: int = 1) -> None:
        self.size_multiple = size_multiple

    def encode(self, frames: Tensor) -> Tensor:
        return frames * 2 - 1

    def decode(self, values: Tensor) -> Tensor:
        return ((values + 1) / 2).clamp(0, 1)

    def project(self, values: Tensor) -> Tensor:
        return values.clamp(-1, 1)
