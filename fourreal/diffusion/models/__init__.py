"""Generator models: the base video DiT, the two-stream grid model and its sync layers."""

from fourreal.diffusion.models.checkpoint import load_generator, save_generator
from fourreal.diffusion.models.dit import CONFIGS, DiTConfig, VideoDiT
from fourreal.diffusion.models.sync import SYNC_KINDS, SyncKind
from fourreal.diffusion.models.two_stream import TwoStreamDiT

__all__ = [
    "CONFIGS",
    "SYNC_KINDS",
    "DiTConfig",
    "SyncKind",
    "TwoStreamDiT",
    "VideoDiT",
    "load_generator",
    "save_generator",
]
