"""``fourreal bench generate``: step time of the two-stream model and its variants.

For each config (``tiny``, ``small``) on one 8×8 grid of 32×32 frames (64 tokens per frame),
times a sampling step (forward, no grad) and a training step (forward + backward) of:

* ``separate``: the base model run on the two streams' sequences one after the other, no sync
  (the cost the two-stream model must not exceed by more than 10%, design.md §10);
* ``soft``, ``hard``: the two-stream model (Eq. 4 with Eq. 9–10 / Eq. 8);
* ``sequential``: the interleaving baseline (Eq. 5).

The variants of a config are timed round-robin (one run of each, ``repeats`` rounds, each
starting with another variant; medians reported), so a change in the machine's load during the
run affects them alike and their ratios stay meaningful on a shared machine. FLOPs are counted
by ``torch.utils.flop_counter`` (matmuls and attention, on the CPU too) and divided by the time;
the machine's matmul throughput is measured beside them, so the model's achieved fraction of the
peak is comparable across machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from fourreal.diffusion.models import CONFIGS, TwoStreamDiT, VideoDiT
from fourreal.diffusion.models.dit import count_parameters
from fourreal.diffusion.pipelines.grid import Precision, use_bf16
from fourreal.io.atomic import write_json
from fourreal.types import row_and_column

GRID = (8, 8)
FRAME = 32
VARIANTS = ("separate", "soft", "hard", "sequential")
MATMUL_SIZE = 2048


def matmul_gflops(
    size: int | None = None, repeats: int = 5, device: str = "cpu"
) -> dict[str, float]:
    """Measured GFLOP/s of square fp32 and bf16 matmuls: ``torch.mm`` and ``nn.Linear`` (on
    CPUs ``nn.Linear`` goes through oneDNN, which can be much faster than ``mm``)."""
    size = size or MATMUL_SIZE
    a = torch.randn(size, size, device=device)
    linear = torch.nn.Linear(size, size, bias=False, device=device)
    flops = 2 * size**3
    results = {}
    with torch.no_grad():
        results["mm_fp32"] = flops / _median_time(lambda: torch.mm(a, a), repeats, device) / 1e9
        results["linear_fp32"] = flops / _median_time(lambda: linear(a), repeats, device) / 1e9
        with _autocast(True, device):
            results["linear_bf16"] = flops / _median_time(lambda: linear(a), repeats, device) / 1e9
    return {k: round(v, 1) for k, v in results.items()}


def _autocast(bf16: bool, device: str = "cpu"):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, torch.bfloat16)


def _elapsed(fn: Callable[[], object], device: str = "cpu") -> float:
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else _nothing
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def _nothing() -> None:
    pass


def _median_time(fn: Callable[[], object], repeats: int, device: str = "cpu") -> float:
    fn()  # warm-up
    return statistics.median(_elapsed(fn, device) for _ in range(repeats))


def _inputs(seed: int = 0, device: str = "cpu"):
    V, T = GRID
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, V, T, 3, FRAME, FRAME, generator=g)
    known = row_and_column(V, T)[None]
    return x.to(device), torch.rand(1, generator=g).to(device), known.to(device)


def _variant(stack: VideoDiT, variant: str) -> tuple[Callable, torch.nn.Module]:
    """The function to time and the module holding its parameters."""
    if variant != "separate":
        model = TwoStreamDiT(stack, variant)
        return model, model

    def separate(x, sigma, known):
        B, V, T = known.shape
        cols = x.transpose(1, 2).reshape(B * T, V, *x.shape[3:])
        view = stack(cols, sigma.repeat(T), known.transpose(1, 2).reshape(B * T, V), "freeze")
        time = stack(x.reshape(B * V, T, *x.shape[3:]), sigma.repeat(V), known.reshape(-1, T))
        return view.sum() + time.sum()

    return separate, stack


def _cpu_attention_forward_flops(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward_flops(grad_out, query, key, value, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _flop_counter() -> FlopCounterMode:
    """A FLOP counter that also counts the CPU kernels of ``scaled_dot_product_attention``
    (PyTorch counts only the CUDA ones), so CPU and GPU figures agree."""
    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_forward_flops,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flops,
    }
    return FlopCounterMode(display=False, custom_mapping=mapping)


class _Case:
    """One variant of one config: its step functions and FLOP counts."""

    def __init__(self, name: str, variant: str, bf16: bool, device: str = "cpu") -> None:
        torch.manual_seed(0)
        self.name, self.variant = name, variant
        fn, self.module = _variant(VideoDiT(CONFIGS[name]).to(device), variant)
        self.module.to(device)
        params = list(self.module.parameters())
        x, sigma, known = _inputs(device=device)

        def forward():
            with torch.no_grad(), _autocast(bf16, device):
                fn(x, sigma, known)

        def train_step():
            for p in params:
                p.grad = None
            with _autocast(bf16, device):
                out = fn(x, sigma, known)
            (out.float().square().mean() if out.ndim else out.float()).backward()

        self.forward, self.train_step = forward, train_step
        counter = _flop_counter()
        with counter:
            forward()
        self.forward_flops = counter.get_total_flops()
        counter = _flop_counter()
        with counter:
            train_step()  # also the warm-up of the timed runs
        self.train_flops = counter.get_total_flops()
        self.forward_times: list[float] = []
        self.train_times: list[float] = []

    def row(self) -> dict:
        forward_s = statistics.median(self.forward_times)
        train_s = statistics.median(self.train_times)
        return {
            "config": self.name,
            "variant": self.variant,
            "parameters": count_parameters(self.module),
            "forward_ms": round(forward_s * 1000, 1),
            "train_step_ms": round(train_s * 1000, 1),
            "forward_gflop": round(self.forward_flops / 1e9, 2),
            "train_gflop": round(self.train_flops / 1e9, 2),
            "forward_flops": self.forward_flops,
            "train_flops": self.train_flops,
            "forward_gflops_per_s": round(self.forward_flops / forward_s / 1e9, 1),
            "train_gflops_per_s": round(self.train_flops / train_s / 1e9, 1),
        }


def bench_config(
    name: str, repeats: int = 3, bf16: bool = False, device: str = "cpu"
) -> list[dict]:
    """Rows of every variant of one config, timed round-robin, with their ratios to
    ``separate``."""
    cases = [_Case(name, variant, bf16, device) for variant in VARIANTS]
    for round_ in range(repeats):
        # each round starts with another variant, so no variant always runs first
        for case in cases[round_ % len(cases) :] + cases[: round_ % len(cases)]:
            case.forward_times.append(_elapsed(case.forward, device))
            case.train_times.append(_elapsed(case.train_step, device))
    rows = [case.row() for case in cases]
    separate = rows[VARIANTS.index("separate")]
    for row in rows:
        row["forward_vs_separate"] = round(row["forward_ms"] / separate["forward_ms"], 3)
        row["train_vs_separate"] = round(row["train_step_ms"] / separate["train_step_ms"], 3)
    return rows


def bench_generate(
    configs: tuple[str, ...] = ("tiny", "small"),
    repeats: int = 3,
    output: Path | None = Path("bench/results/generate.json"),
    quiet: bool = False,
    precision: Precision = "auto",
    device: str = "cpu",
) -> dict:
    """Run every (config, variant), print a table and write JSON. ``precision`` as in
    :func:`fourreal.diffusion.pipelines.grid.use_bf16`."""
    from fourreal.recon.render.benchmark import machine

    load_before = _load()
    bf16 = use_bf16(precision, torch.device(device))
    start = time.perf_counter()
    peak = matmul_gflops(device=device)
    rows = []
    for name in configs:
        rows += bench_config(name, repeats, bf16, device)
        if not quiet:
            for row in rows[-len(VARIANTS) :]:
                print(json.dumps(row), flush=True)
    result = {
        "benchmark": "two-stream grid model step time, one 8x8 grid of 32x32 frames, 64 tokens "
        "per frame; forward = one sampling step, train = forward+backward; medians of "
        f"{repeats} round-robin runs",
        "precision": "bf16 autocast" if bf16 else "fp32",
        "device": device,
        "machine": machine(),
        # other work on the machine slows every variant alike but adds noise: 1/5/15-min loads
        "load_average": {"before": load_before, "after": _load()},
        "seconds": round(time.perf_counter() - start, 1),
        "matmul_gflops_per_s": peak,
        "target": "two-stream step time <= 1.1x its two streams run separately (design.md §10)",
        "results": rows,
    }
    if output is not None:
        write_json(output, result)
    if not quiet:
        print(f"matmul GFLOP/s: {peak}; model in {result['precision']}")
        for r in rows:
            print(
                f"{r['config']:6s} {r['variant']:10s} forward {r['forward_ms']:8.1f} ms "
                f"({r['forward_vs_separate']:.2f}x separate, {r['forward_gflops_per_s']:6.1f} "
                f"GFLOP/s)  train {r['train_step_ms']:8.1f} ms ({r['train_vs_separate']:.2f}x)"
            )
    return result


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
