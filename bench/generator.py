"""Train the bundled ``tiny`` generator and its ablation variants, score them on held-out grids
and bundle the checkpoint (issue 8).

Runs, one after the other (each command is recorded in the bundle's ``tiny.json``):

1. stage 0: the base video DiT on single videos (8 frames, 64×64);
2. stage 1 from it with each sync: soft, hard, sequential (4×4 pseudo-4D grids);
3. stage 2 from the soft and hard stage-1 models (4×4 multi-view synthetic grids);
4. on a CUDA machine, ``bench/generator_gpu.sh``: the soft stage-2 model fine-tuned whole
   (``--train-all``) on 8×8 multi-view grids for 8.3 minutes, then 1.3 more (``s3_gpu``,
   ``s3_gpu_more``); without CUDA those run folders must already be in ``--runs`` (copied from
   the GPU machine), or the step is skipped with ``--cpu-only`` (and nothing is bundled);
5. ``fourreal eval generate`` on the held-out grids with every variant, the training-free
   Eq. 12/13 syncs on the stage-0 blocks, warp, copy-row/column and the untrained model:
   ``bench/results/generator_ablation.json``;
6. the GPU fine-tuned model copied into ``fourreal/diffusion/weights/tiny.safetensors``
   (with ``resolution`` 64×64, the window it generates with and its best measured sampling,
   2 steps × the mean of 8 samples) beside ``tiny.json``.

    .venv/bin/python bench/generator.py --runs runs/generator [--skip-training] [--cpu-only]

About 75 minutes of CPU training (2 cores, AVX2, fp32), 10 of GPU training (one H200) and 15
of evaluation on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ("--dit-width 192 --dit-depth 4 --dit-heads 3 --dit-patch 8 --height 64 --width 64 "
         "--data-seed 0 --quiet")  # fmt: skip
STAGE0 = ("--stage 0 --views 8 --times 8 --batch-size 4 --steps 420 --lr 5e-4 --warmup 50 "
          "--save-every 100")  # fmt: skip
STAGE1 = ("--stage 1 --views 4 --times 4 --batch-size 2 --steps 700 --lr 5e-4 --warmup 50 "
          "--save-every 100")  # fmt: skip
STAGE2 = ("--stage 2 --views 4 --times 4 --batch-size 2 --steps 300 --lr 5e-4 --warmup 30 "
          "--save-every 100")  # fmt: skip
LABEL = "soft + GPU fine-tune (bundled tiny)"
SAMPLING = {"steps": 2, "samples": 8}
"""The bundled model's sampling: the best PSNR of those measured on the held-out grids, at
fewer model calls (16 a window) than one 20-step sample."""
GPU = [("s3_gpu", "s2_soft", 8.3), ("s3_gpu_more", "s3_gpu", 1.3)]
"""The GPU fine-tunes: (run, init run, minutes)."""


def commands(runs: Path) -> list[str]:
    out = [f"fourreal train -o {runs}/s0 {STAGE0} {MODEL}"]
    for sync in ("soft", "hard", "sequential"):
        out.append(f"fourreal train -o {runs}/s1_{sync} {STAGE1} --sync {sync} "
                   f"--init {runs}/s0/model.safetensors {MODEL}")  # fmt: skip
    for sync in ("soft", "hard"):
        out.append(f"fourreal train -o {runs}/s2_{sync} {STAGE2} --sync {sync} "
                   f"--init {runs}/s1_{sync}/model.safetensors {MODEL}")  # fmt: skip
    return out


def gpu_commands(runs: Path) -> list[str]:
    return [f"bash bench/generator_gpu.sh {runs}/{init}/model.safetensors {runs}/{run} {minutes}"
            for run, init, minutes in GPU]  # fmt: skip


def variants(runs: Path, cpu_only: bool = False) -> list[str]:
    bundled = f"{runs}/{GPU[-1][0]}/model.safetensors"
    gpu = [
        f"{LABEL}={bundled},steps={SAMPLING['steps']},samples={SAMPLING['samples']}",
        f"soft + GPU fine-tune, one sample, 2 steps={bundled},steps=2,samples=1",
        f"soft + GPU fine-tune, one sample, 20 steps={bundled},steps=20,samples=1",
    ]
    return [
        *([] if cpu_only else gpu),
        f"soft (CPU stages only)={runs}/s2_soft/model.safetensors",
        f"soft without stage 2={runs}/s1_soft/model.safetensors",
        f"hard={runs}/s2_hard/model.safetensors",
        f"sequential={runs}/s1_sequential/model.safetensors",
        f"training-free Eq. 12 (average)={runs}/s0/model.safetensors@average",
        f"training-free Eq. 13 (weighted)={runs}/s0/model.safetensors@weighted",
    ]


def run(command: str) -> None:
    print(f"$ {command}", file=sys.stderr, flush=True)
    args = shlex.split(command)
    subprocess.run([str(ROOT / ".venv/bin" / args[0]), *args[1:]], cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/generator"))
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--cpu-only", action="store_true",
                        help="leave out the GPU fine-tune (and do not bundle)")  # fmt: skip
    parser.add_argument(
        "--window",
        type=int,
        nargs=2,
        default=None,
        help="generation window of the models (default: their training grid)",
    )
    parser.add_argument("--grids", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    train = commands(args.runs)
    began = time.perf_counter()
    if not args.skip_training:
        for command in train:
            run(command)
    if not args.cpu_only:
        gpu_stage(args.runs, args.skip_training)
        train += gpu_commands(args.runs)
    output = ROOT / "bench/results/generator_ablation.json"
    window = ["--window", *map(str, args.window)] if args.window else []
    models = " ".join(shlex.quote(v) for v in variants(args.runs, args.cpu_only))
    evaluate = (
        f"fourreal eval generate --models {models} --grids {args.grids} "
        f"--steps {args.steps} --samples 1 {' '.join(window)} -o {output} --quiet"
    )
    run(evaluate)
    samples_figure(args.runs, args.window, args.steps, ROOT / "docs/images/generator_samples.png",
                   args.cpu_only)  # fmt: skip
    if not args.cpu_only:
        bundle(args.runs, output, train, evaluate, args.window, time.perf_counter() - began)


def gpu_stage(runs: Path, skip_training: bool) -> None:
    """Run the GPU fine-tunes where CUDA is, else check their run folders are there."""
    import torch

    if torch.cuda.is_available() and not skip_training:
        for command in gpu_commands(runs):
            args = shlex.split(command)
            print(f"$ {command}", file=sys.stderr, flush=True)
            env = {**os.environ, "PYTHON": str(ROOT / ".venv/bin/python")}
            subprocess.run(args, cwd=ROOT, check=True, env=env)
        return
    missing = [run for run, _, _ in GPU if not (runs / run / "model.safetensors").is_file()]
    if missing:
        sys.exit(
            f"no CUDA here and no GPU runs {', '.join(missing)} in {runs}: run "
            + " && ".join(gpu_commands(runs))
            + " on a CUDA machine and copy the run folders here, or pass --cpu-only"
        )


def samples_figure(runs: Path, window: list[int] | None, steps: int, path: Path,
                   cpu_only: bool = False) -> None:  # fmt: skip
    """Held-out grid 0, its last view over time, as each method fills it (one row each)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from fourreal.diffusion import evaluate as ev

    grid = ev.held_out_grids(ev.HeldOut(count=1))[0]
    use = tuple(window) if window else None
    specs = [ev.parse_model(spec) for spec in variants(runs, cpu_only)]
    methods = ev.build_methods(specs, steps, 0, use, samples=1)  # type: ignore[arg-type]
    fillers = {"ground truth": lambda g: g.frames} | {k: f for k, (f, _) in methods.items()}
    v, label_width, size = grid.views - 1, 240, grid.height
    canvas = Image.new("RGB", (label_width + grid.times * size, len(fillers) * size), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, fill) in enumerate(fillers.items()):
        frames = fill(grid)[v].clamp(0, 1).permute(0, 2, 3, 1).numpy()  # [T, H, W, 3]
        strip = np.concatenate(list(frames), axis=1)
        canvas.paste(
            Image.fromarray((strip * 255).round().astype(np.uint8)), (label_width, i * size)
        )
        draw.text((4, i * size + size // 2 - 6), name, fill="black")
    canvas.save(path)
    print(f"wrote {path}", file=sys.stderr)


def bundle(runs: Path, ablation: Path, train: list[str], evaluate: str,
           window: list[int] | None, seconds: float) -> None:  # fmt: skip
    """Copy the soft stage-2 model into the package with its record."""
    from fourreal.diffusion.models.checkpoint import BUNDLED, load_generator, save_generator

    model, config = load_generator(runs / GPU[-1][0] / "model.safetensors")
    use = tuple(window) if window else tuple(config["window"])
    save_generator(model, BUNDLED / "tiny.safetensors", use, (64, 64), SAMPLING)  # type: ignore[arg-type]
    result = json.loads(ablation.read_text())
    summaries = {
        p.parent.name: json.loads(p.read_text()) for p in sorted(runs.glob("*/train.json"))
    }
    record = {
        "what": "the bundled tiny generator: soft sync, trained in three stages on a 2-core "
        "CPU, then fine-tuned whole on multi-view grids on one H200 GPU (10 minutes); rerun "
        "with `python bench/generator.py` (the commands below, in order; the GPU ones are "
        "time-budgeted, so a rerun takes about, not exactly, the recorded steps)",
        "sampling": SAMPLING,
        "label": LABEL,
        "window": list(use),
        "resolution": [64, 64],
        "data_seed": 0,
        "held_out_data_seed": result["held_out"]["data_seed"],
        "commands": train,
        "evaluation": evaluate,
        "training": {
            run: {k: v for k, v in s.items() if k != "rank_weight_digests"}
            for run, s in summaries.items()
        },
        "held_out": {k: result[k] for k in ("held_out", "sampling", "rows")},
        "seconds": round(seconds, 1),
    }
    (BUNDLED / "tiny.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"bundled {BUNDLED / 'tiny.safetensors'} and tiny.json", file=sys.stderr)


if __name__ == "__main__":
    main()
