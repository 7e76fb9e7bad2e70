"""The fourreal-splat model: same pictures as fourreal's own renderer, time and view handling."""

from __future__ import annotations

import copy

import pytest
import torch
from fourreal_nerfstudio.dataparser import FourrealGridDataParserConfig
from fourreal_nerfstudio.model import FourrealSplatModelConfig
from nerfstudio.cameras.cameras import Cameras

from fourreal.recon.model import PER_GAUSSIAN
from fourreal.recon.render import rasterize


@pytest.fixture(scope="module")
def setup(grid_dir):
    parser = FourrealGridDataParserConfig(data=grid_dir).setup()
    outputs = parser.get_dataparser_outputs("train")
    model = FourrealSplatModelConfig(prune_iterations=20, backend="torch").setup(
        scene_box=outputs.scene_box,
        num_train_data=len(outputs.image_filenames),
        metadata=outputs.metadata,
    )
    model.eval()
    # a deformation that is not the identity, so that time matters
    with torch.no_grad():
        model.gaussians.deform.last.bias.copy_(torch.tensor([0.05, 0.0, 0.0]))
        model.gaussians.deform.last.weight.normal_(
            0, 0.02, generator=torch.Generator().manual_seed(0)
        )
    return parser, outputs, model


def test_renders_a_grid_frame_as_fourreal_does(setup):
    parser, outputs, model = setup
    scene = parser.scene
    i = 5
    camera = outputs.cameras[i : i + 1]
    v = int(camera.metadata["fourreal_view"][0, 0])
    time = camera.times[0].reshape(1)
    ours = model.get_outputs_for_camera(camera)
    g = model.gaussians
    with torch.no_grad():
        positions = g.positions(time, torch.tensor([v]))[0]
        reference = rasterize(
            positions, g.scales, g.opacities, g.colors, torch.linalg.inv(scene.T_world_cam[v]),
            scene.K[v], scene.grid.width, scene.grid.height, scene.background, backend="torch",
        )  # fmt: skip
    assert ours["rgb"].shape == (72, 128, 3)
    assert torch.allclose(ours["rgb"], reference.rgb, atol=1e-5)
    assert float(ours["accumulation"].mean()) > 0.05  # the Gaussians are in view


def test_time_changes_the_picture_and_free_cameras_have_no_view_offsets(setup):
    _, outputs, model = setup
    camera = outputs.cameras[0:1]
    free = Cameras(
        camera_to_worlds=camera.camera_to_worlds, fx=camera.fx, fy=camera.fy, cx=camera.cx,
        cy=camera.cy, width=camera.width, height=camera.height,
    )  # fmt: skip
    at = {}
    for t in (0.0, 1.0):
        free.times = torch.tensor([[t]])
        at[t] = model.get_outputs_for_camera(free)["rgb"]
    assert (at[0.0] - at[1.0]).abs().max() > 0.05
    free.times = None  # a viewer without a time slider renders time 0
    assert torch.equal(model.get_outputs_for_camera(free)["rgb"], at[0.0])


def test_training_losses_and_metrics(setup):
    _, outputs, model = setup
    camera = outputs.cameras[3:4]
    image = torch.rand(72, 128, 3)
    model.train()
    try:
        rendered = model.get_outputs(camera)
        losses = model.get_loss_dict(rendered, {"image": image})
    finally:
        model.eval()
    assert set(losses) == {"photometric", "smooth"}
    total = sum(losses.values())
    total.backward()
    assert model.gaussians.means.grad is not None and model.gaussians.means.grad.abs().sum() > 0
    metrics, images = model.get_image_metrics_and_images(
        {k: v.detach() for k, v in rendered.items()}, {"image": (image * 255).to(torch.uint8)}
    )
    assert set(metrics) == {"psnr", "ssim"} and 0 < metrics["psnr"] < 40
    assert images["img"].shape == (72, 256, 3)
    groups = model.get_param_groups()
    assert set(groups) == {"means", "scales", "opacities", "colors", "deform"}


def test_checkpoint_with_another_count_loads(setup):
    _, _, model = setup
    state = {k: v.clone() for k, v in model.state_dict().items()}
    keep = torch.arange(len(model.gaussians)) % 2 == 0
    for name in PER_GAUSSIAN:  # every per-Gaussian table, as a run that pruned would save
        state[f"gaussians.{name}"] = state[f"gaussians.{name}"][keep]
    state["gaussians.view_offsets"] = state["gaussians.view_offsets"][:, keep]
    clone = copy.deepcopy(model)
    clone.load_state_dict(state)
    assert len(clone.gaussians) == int(keep.sum())
    assert torch.equal(clone.gaussians.means, state["gaussians.means"])
