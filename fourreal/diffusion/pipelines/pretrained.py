"""A grid pipeline over a pretrained Wan 2.1 model in diffusers format, from a local folder.

The folder is a diffusers repository layout: ``transformer/`` (``WanTransformer3DModel``) and
``vae/`` (``AutoencoderKLWan``), each with its ``config.json`` and safetensors weights, and
optionally ``contexts.safetensors`` with ``freeze`` and ``dynamic`` text embeddings
``[L, text_dim]``. Nothing is downloaded; pickled weights are refused. Needs the ``pretrained``
extra (``pip install 'fourreal[pretrained]'``).
"""

from __future__ import annotations

import os
from pathlib import Path

from fourreal.diffusion.models.sync import SyncKind
from fourreal.diffusion.models.two_stream import TwoStreamDiT
from fourreal.diffusion.models.wan import WanStack
from fourreal.diffusion.pipelines.grid import GridPipeline
from fourreal.diffusion.pipelines.latent import WanVAECodec
from fourreal.diffusion.schedulers import RectifiedFlow
from fourreal.errors import FourrealError


def load_wan_pipeline(
    folder: str | os.PathLike[str],
    sync: SyncKind = "weighted",
    window: tuple[int, int] = (8, 8),
    shift: float = 3.0,
) -> GridPipeline:
    """A :class:`GridPipeline` whose block stack is the Wan transformer in ``folder``.

    A pretrained video model has no trained sync layers: ``sync`` defaults to the
    training-free weighted averaging (Eq. 13); ``soft`` starts as two independent streams.
    """
    try:
        from diffusers import AutoencoderKLWan, WanTransformer3DModel
    except ImportError as err:
        raise FourrealError(
            "pretrained bases need diffusers: pip install 'fourreal[pretrained]'"
        ) from err
    from safetensors.torch import load_file

    folder = Path(folder)
    for part in ("transformer", "vae"):
        if not (folder / part / "config.json").is_file():
            raise FourrealError(
                f"{folder / part} has no config.json: the folder must hold a diffusers Wan model "
                "(transformer/ and vae/ subfolders)"
            )
    kwargs = {"local_files_only": True, "use_safetensors": True}
    try:
        transformer = WanTransformer3DModel.from_pretrained(
            folder, subfolder="transformer", **kwargs
        )
        vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", **kwargs)
    except (OSError, ValueError) as err:  # missing safetensors weights, bad config
        raise FourrealError(
            f"cannot load the Wan model in {folder} (safetensors weights only, nothing is "
            f"downloaded): {err}"
        ) from err
    contexts = None
    if (folder / "contexts.safetensors").is_file():
        contexts = load_file(str(folder / "contexts.safetensors"))
    stack = WanStack(transformer.eval(), contexts)
    model = TwoStreamDiT(stack, sync).eval()
    codec = WanVAECodec(vae.eval(), patch=stack.patch)
    overlap = (window[0] // 2, window[1] // 2)
    return GridPipeline(
        model, RectifiedFlow(shift=shift), codec, window, overlap, conditioning="renoise"
    )
