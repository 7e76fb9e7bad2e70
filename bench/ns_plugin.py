"""The nerfstudio plugin's learning check (issue 9): ``fourreal-splat`` for 300 CPU steps on a
4×4 grid at 72×128 of the default synthetic scene, held-out PSNR at step 0 and at the end, with
the tracked poses (the default) and with grid.json's poses. Writes bench/results/nerfstudio.json.

Runs in the plugin's environment (``make nerfstudio``); the file is not named nerfstudio.py,
which would shadow the nerfstudio package:

    nice -n 19 .venv-ns/bin/python bench/ns_plugin.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fourreal_nerfstudio.experiment import configure, train_and_evaluate

from fourreal.io import save_grid
from fourreal.io.atomic import write_json
from fourreal.recon.render.benchmark import machine
from fourreal.synth import synth_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--output", type=Path, default=Path("bench/results/nerfstudio.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        grid_path = Path(tmp) / "grid"
        save_grid(synth_grid("default", seed=0, views=4, times=4, height=72, width=128), grid_path)
        for cameras in ("tracked", "grid"):
            config = configure(grid_path, Path(tmp) / cameras, args.steps)
            config.pipeline.datamanager.dataparser.cameras = cameras  # type: ignore[attr-defined]
            result = train_and_evaluate(config)
            result.pop("config")
            result["cameras"] = cameras
            result["eval_psnr_gain"] = result["eval_psnr"] - result["eval_psnr_step0"]
            rows.append(result)
            print(
                f"cameras={cameras}: held-out PSNR {result['eval_psnr_step0']:.2f} -> "
                f"{result['eval_psnr']:.2f} dB in {args.steps} steps "
                f"({result['train_seconds']:.1f} s)"
            )
    write_json(
        args.output,
        {
            "benchmark": "nerfstudio fourreal-splat, CPU",
            "grid": {"scene": "default", "seed": 0, "views": 4, "times": 4, "size": [72, 128]},
            "command": "nice -n 19 .venv-ns/bin/python bench/ns_plugin.py",
            "device": "cpu",
            "machine": machine(),
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
