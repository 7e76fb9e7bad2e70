"""300 CPU steps of fourreal-splat on a 4×4 grid at 72×128 raise the held-out PSNR by ≥ 5 dB."""

from __future__ import annotations

from fourreal_nerfstudio.experiment import configure, train_and_evaluate


def test_300_steps_improve_held_out_psnr_by_5_db(grid_dir, tmp_path):
    result = train_and_evaluate(configure(grid_dir, tmp_path / "outputs", steps=300))
    gain = result["eval_psnr"] - result["eval_psnr_step0"]
    assert gain >= 5.0, result
    assert result["train_psnr"] - result["train_psnr_step0"] >= 5.0, result
