"""A short CPU smoke run of ``fourreal train`` (stage 1, pseudo-4D grids) that records the
training loss falling: ``bench/results/train_smoke.json``.

This is a smoke run of the training loop, not the bundled checkpoint (a later, long run).
Run: ``nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python bench/train_smoke.py``.
"""

from __future__ import annotations

import platform
import sys
import tempfile
from pathlib import Path

import torch

from fourreal.diffusion.data import DataConfig
from fourreal.diffusion.train import TrainConfig, train
from fourreal.diffusion.train_log import smooth
from fourreal.diffusion.train_state import load_state
from fourreal.io.atomic import write_json

STEPS = 250


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        config = TrainConfig(
            output=run, stage=1, model="tiny", width=64, depth=4, heads=2, patch=4,
            data=DataConfig(views=4, times=4, height=32, width=32, seed=0),
            batch_size=2, steps=STEPS, lr=5e-4, warmup=20, save_every=100, progress=False,
        )  # fmt: skip
        summary = train(config)
        losses = load_state(run / "state.safetensors").losses
    window = 30
    trend = smooth(losses, window)
    result = {
        "what": "smoke run of fourreal train (stage 1 on pseudo-4D grids), NOT the bundled "
        "checkpoint: a tiny model for a few hundred CPU steps to show the loss falls",
        "config": {k: v for k, v in config.to_dict().items() if k != "output"},
        "summary": {k: v for k, v in summary.items() if k != "rank_weight_digests"},
        "train_loss_mean_first_30": sum(losses[:window]) / window,
        "train_loss_mean_last_30": sum(losses[-window:]) / window,
        "train_loss_running_mean_every_30": trend[window - 1 :: window],
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
    }
    out = Path(__file__).parent / "results" / "train_smoke.json"
    write_json(out, result)
    print(f"train loss {result['train_loss_mean_first_30']:.4f} -> "
          f"{result['train_loss_mean_last_30']:.4f}; held-out {summary['held_out_loss_start']:.4f}"
          f" -> {summary['held_out_loss_end']:.4f} in {summary['seconds']:.0f} s -> {out}",
          file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
