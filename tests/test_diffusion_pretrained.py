"""The Wan adapter: a diffusers video transformer and VAE as the two-stream model's base,
with tiny random configs built here and loaded back from a local folder."""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from fourreal.diffusion.models import TwoStreamDiT  # noqa: E402
from fourreal.diffusion.models.wan import WanStack  # noqa: E402
from fourreal.errors import FourrealError  # noqa: E402


def tiny_transformer(seed=0):
    torch.manual_seed(seed)
    return diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
        out_channels=4, text_dim=8, freq_dim=32, ffn_dim=16, num_layers=2, rope_max_seq_len=32,
    ).eval()  # fmt: skip


def tiny_vae(seed=0):
    torch.manual_seed(seed)
    return diffusers.AutoencoderKLWan(
        base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.0, 0.3],
        latents_std=[1.5, 0.8, 1.0, 2.0],
    ).eval()  # fmt: skip


def test_stack_on_one_video_is_the_transformer_forward():
    transformer = tiny_transformer()
    text = torch.randn(3, 8)
    model = TwoStreamDiT(WanStack(transformer, {"dynamic": text}), "soft").eval()
    latents = torch.randn(2, 1, 5, 4, 4, 6)  # B, V=1, T, C, h, w
    sigma = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        ours = model(latents, sigma, torch.zeros(2, 1, 5, dtype=torch.bool))[:, 0]
        theirs = transformer(
            latents[:, 0].transpose(1, 2), sigma * 1000, text[None].expand(2, -1, -1)
        ).sample.transpose(1, 2)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_grid_pipeline_from_a_local_folder(tmp_path):
    from fourreal.diffusion.pipelines.pretrained import load_wan_pipeline

    tiny_transformer().save_pretrained(tmp_path / "wan" / "transformer")
    tiny_vae().save_pretrained(tmp_path / "wan" / "vae")
    assert list((tmp_path / "wan" / "transformer").glob("*.safetensors"))
    pipe = load_wan_pipeline(tmp_path / "wan", sync="weighted", window=(2, 3))
    frames = torch.rand(3, 4, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    known = torch.zeros(3, 4, dtype=torch.bool)
    known[0] = True
    known[:, 0] = True
    a = pipe(frames, known, steps=2, seed=1)
    b = pipe(frames, known, steps=2, seed=1)
    assert a.shape == frames.shape and torch.equal(a, b)
    assert torch.equal(a[known], frames[known])
    assert bool(torch.isfinite(a).all())


def test_missing_folder_is_a_clear_error(tmp_path):
    from fourreal.diffusion.pipelines.pretrained import load_wan_pipeline

    with pytest.raises(FourrealError, match="transformer/ and vae/"):
        load_wan_pipeline(tmp_path)


def test_pickled_weights_are_refused(tmp_path):
    from fourreal.diffusion.pipelines.pretrained import load_wan_pipeline

    tiny_transformer().save_pretrained(tmp_path / "wan" / "transformer", safe_serialization=False)
    tiny_vae().save_pretrained(tmp_path / "wan" / "vae")
    assert not list((tmp_path / "wan" / "transformer").glob("*.safetensors"))
    with pytest.raises(FourrealError, match="safetensors weights only"):
        load_wan_pipeline(tmp_path / "wan")
