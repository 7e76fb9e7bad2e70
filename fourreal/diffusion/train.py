"""``fourreal train``: the generator's three training stages (paper §3.3, §4.2; design.md §4).

- stage 0: the base model on single videos of both kinds (fixed-view with the dynamic context,
  freeze-time with the freeze-time context); the two-stream model runs a one-row or one-column
  grid as exactly the base model, so stage 0 trains only the block stack.
- stage 1: the whole two-stream model on pseudo-4D grids.
- stage 2: only the sync layers, on multi-view grids of synthetic scenes.

Loss: rectified-flow velocity MSE on the unknown frames of randomly masked grids
(:mod:`fourreal.diffusion.objective`); AdamW with warm-up; EMA weights; bf16 autocast where it is
fast; optional gradient checkpointing. Under ``torchrun`` every process is one DDP rank (gloo on
CPU, nccl on CUDA) with its own data; rank 0 writes the run folder:

``state.safetensors`` (resume), ``model.safetensors`` (EMA weights, loadable by
``fourreal generate --checkpoint``), ``train.log``, ``config.yaml``, ``loss.png`` and, when the
run is done, ``train.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from fourreal.diffusion.data import DataConfig, batches, check_sizes, make_sample, sample_seed
from fourreal.diffusion.models import CONFIGS, DiTConfig, TwoStreamDiT, VideoDiT
from fourreal.diffusion.models.sync import TRAINED_SYNCS, SyncKind
from fourreal.diffusion.objective import masked_velocity_loss, random_known
from fourreal.diffusion.pipelines.grid import Precision, use_bf16
from fourreal.errors import FourrealError

Stage = Literal[0, 1, 2]
STAGE_DATA = {0: "videos", 1: "pseudo4d", 2: "multiview"}


@dataclass(frozen=True)
class TrainConfig:
    """One training run (the CLI's options; see ``fourreal train --help``)."""

    output: Path
    stage: Stage = 0
    model: str = "tiny"
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    patch: int | None = None
    sync: SyncKind = "soft"
    init: Path | None = None
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 2
    steps: int = 1000
    train_all: bool = False
    """Train every weight whatever the stage (e.g. a stage-2 fine-tune of the whole model)."""
    reuse: int = 1
    """Each sample serves about this many steps (see :func:`~fourreal.diffusion.data.batches`)."""
    workers: int = 0
    """Processes that render samples ahead of the training loop (0: in the loop)."""
    max_minutes: float | None = None
    """Stop (and save) after this much training time, even before ``steps``."""
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup: int = 50
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    precision: Precision = "auto"
    grad_checkpoint: bool = False
    device: str = "auto"
    save_every: int = 200
    resume: bool = False
    progress: bool = True

    def dit(self) -> DiTConfig:
        if self.model not in CONFIGS:
            raise FourrealError(f"unknown model {self.model!r}; choose one of {', '.join(CONFIGS)}")
        sizes = {"width": self.width, "depth": self.depth, "heads": self.heads, "patch": self.patch}
        return dataclasses.replace(CONFIGS[self.model], **{k: v for k, v in sizes.items() if v})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return _plain(out)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


# ---------------------------------------------------------------------------- setup


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """One process of a ``torchrun`` job (``WORLD_SIZE`` > 1), or a single process."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist(device=torch.device(device))
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Dist(rank, world_size, torch.device(f"cuda:{local}" if device == "cuda" else device))


def trainable_parameters(
    model: TwoStreamDiT, stage: int, everything: bool = False
) -> list[nn.Parameter]:
    """Stage 0 trains the block stack, stage 1 everything, stage 2 only the sync layers (and
    their diffusion-time embedding); everything else is frozen. ``everything`` trains all."""
    for name, param in model.named_parameters():
        in_stack = name.startswith("stack.")
        param.requires_grad_(everything or {0: in_stack, 1: True, 2: not in_stack}[stage])
    return [p for p in model.parameters() if p.requires_grad]


def enable_grad_checkpoint(model: TwoStreamDiT) -> None:
    """Recompute each block's activations in the backward pass instead of storing them (the
    per-instance ``forward`` leaves the state-dict keys unchanged)."""
    from torch.utils.checkpoint import checkpoint

    for block in model.stack.blocks:
        inner = block.forward

        def forward(*args: Any, _inner: Any = inner) -> Any:
            return checkpoint(_inner, *args, use_reentrant=False)

        block.forward = forward


def build_model(config: TrainConfig) -> TwoStreamDiT:
    """The model to train: fresh, or the block stack (stages 0–1) / everything (stage 2) of
    ``--init``, a generator checkpoint of an earlier stage."""
    from fourreal.diffusion.models.checkpoint import load_generator

    if config.stage == 2 and config.sync not in TRAINED_SYNCS:
        raise FourrealError(
            f"stage 2 trains sync layers; --sync {config.sync} has none (use soft or hard)"
        )
    with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only
        torch.manual_seed(config.data.seed)
        model = TwoStreamDiT(VideoDiT(config.dit()), sync=config.sync)
    if config.init is not None:
        full = config.stage == 2
        loaded, stored = load_generator(config.init, sync=config.sync if full else "average")
        if stored["dit"] != config.dit().to_dict():
            raise FourrealError(
                f"--init {config.init} holds a model of {stored['dit']}, not the configured "
                f"{config.dit().to_dict()}; pass the same --model and --dit-* options"
            )
        source = loaded if full else loaded.stack
        (model if full else model.stack).load_state_dict(source.state_dict())
    return model


# ---------------------------------------------------------------------------- the loop


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) one training stage; returns the run's summary (``train.json``)."""
    dist = setup_distributed(config.device)
    try:
        return _train(config, dist)
    finally:
        if dist.world_size > 1:
            import torch.distributed as td

            td.destroy_process_group()


def _train(config: TrainConfig, dist: Dist) -> dict[str, Any]:
    from fourreal.diffusion.models.checkpoint import save_generator
    from fourreal.diffusion.train_log import log_line, write_config, write_loss_png
    from fourreal.diffusion.train_state import TrainState, load_state, load_weights, save_state
    from fourreal.io.atomic import write_json

    run = Path(config.output)
    state_path = run / "state.safetensors"
    if not config.resume and state_path.exists():
        raise FourrealError(f"{run} already holds a run; pass --resume to continue it, or "
                            "choose another --output")  # fmt: skip
    model = build_model(config)
    check_sizes(config.data, model.stack.size_multiple)
    params = trainable_parameters(model, config.stage, config.train_all)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start, losses = 0, []
    if config.resume:
        saved = load_state(state_path)
        load_weights(model, saved.model, state_path)
        optimizer.load_state_dict(saved.optimizer)
        ema = {k: saved.ema[k].clone() for k in ema} if set(saved.ema) == set(ema) else ema
        start, losses = saved.step, saved.losses[: saved.step]
    model.to(dist.device)
    ema = {k: v.to(dist.device) for k, v in ema.items()}
    if config.grad_checkpoint:
        enable_grad_checkpoint(model)
    net: nn.Module = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [dist.device.index] if dist.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    bf16 = use_bf16(config.precision, dist.device)
    kind = STAGE_DATA[config.stage]
    held_out = _held_out(kind, config)
    if dist.main:
        run.mkdir(parents=True, exist_ok=True)
        write_config(run, config.to_dict() | {"precision_used": "bf16" if bf16 else "fp32",
                                              "world_size": dist.world_size})  # fmt: skip
        log_line(run, f"stage {config.stage} on {kind}, steps {start}..{config.steps}, "
                      f"{sum(p.numel() for p in params)} trainable parameters, "
                      f"{dist.world_size} process(es), {'bf16' if bf16 else 'fp32'}")  # fmt: skip
    eval_start = _eval_loss(model, held_out, bf16, dist.device)
    stream = batches(kind, config.data, config.batch_size, start, dist.rank, dist.world_size,
                     reuse=config.reuse, workers=config.workers)  # fmt: skip

    def checkpoint(step: int) -> None:
        if not dist.main:
            return
        save_state(state_path, TrainState(step, model.state_dict(), ema, optimizer.state_dict(),
                                          losses, config.to_dict()))  # fmt: skip
        shadow = TwoStreamDiT(VideoDiT(config.dit()), sync=config.sync)
        shadow.load_state_dict({k: v.cpu() for k, v in ema.items()})
        save_generator(shadow, run / "model.safetensors", (config.data.views, config.data.times),
                       (config.data.height, config.data.width))  # fmt: skip
        write_loss_png(run / "loss.png", losses)

    began = time.perf_counter()
    budget = float("inf") if config.max_minutes is None else 60 * config.max_minutes
    show = config.progress and dist.main
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps,
               desc=f"stage {config.stage}", disable=not show)  # fmt: skip
    done = start
    try:
        for step in bar:
            clean = next(stream).to(dist.device) * 2 - 1
            g = torch.Generator().manual_seed(sample_seed(config.data.seed, step, 1000 + dist.rank))
            known = random_known(clean.shape[0], clean.shape[1], clean.shape[2], g)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup))
            with _autocast(bf16, dist.device):
                loss = masked_velocity_loss(net, clean, known, g)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            _ema_update(ema, model, config.ema_decay, step)
            losses.append(_mean_over_ranks(loss.detach(), dist))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            done = step + 1
            if done % config.save_every == 0 and done < config.steps:
                checkpoint(done)
                if dist.main:
                    log_line(run, f"step {done} loss {losses[-1]:.5f} (saved)")
            if _out_of_time(began, budget, dist):
                break
    finally:
        bar.close()
        stream.close()  # stops the data workers
    seconds = time.perf_counter() - began
    eval_end = _eval_loss(model, held_out, bf16, dist.device)
    digests = _gather_digests(model, dist)
    if len(set(digests)) > 1:
        raise FourrealError(f"DDP ranks diverged: weight digests {digests}")
    checkpoint(done)
    summary = {
        "stage": config.stage, "data": kind, "steps": done, "resumed_from": start,
        "seconds": round(seconds, 2), "world_size": dist.world_size,
        "precision": "bf16" if bf16 else "fp32",
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "held_out_loss_start": eval_start, "held_out_loss_end": eval_end,
        "rank_weight_digests": digests,
    }  # fmt: skip
    if dist.main:
        stopped = ""
        if done < config.steps:
            stopped = f" (stopped by --max-minutes at step {done} of {config.steps})"
        log_line(run, f"done: held-out loss {eval_start:.5f} -> {eval_end:.5f} in {seconds:.1f} s"
                      f"{stopped}")  # fmt: skip
        write_json(run / "train.json", summary)
    return summary


def _out_of_time(began: float, budget: float, dist: Dist) -> bool:
    """Whether the time budget is spent (rank 0 decides, so all ranks stop at the same step)."""
    if budget == float("inf"):
        return False
    over = torch.tensor([time.perf_counter() - began > budget], dtype=torch.int32)
    if dist.world_size > 1:
        import torch.distributed as td

        over = over.to(dist.device)
        td.broadcast(over, 0)
    return bool(over.item())


def _autocast(bf16: bool, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, torch.bfloat16) if bf16 else contextlib.nullcontext()


@torch.no_grad()
def _ema_update(ema: dict[str, torch.Tensor], model: nn.Module, decay: float, step: int) -> None:
    # warm-up of the decay (as in timm/diffusers) so short runs are not dominated by the init
    d = min(decay, (1 + step) / (10 + step))
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            ema[name].lerp_(value, 1 - d)
        else:
            ema[name].copy_(value)


def _mean_over_ranks(value: torch.Tensor, dist: Dist) -> float:
    if dist.world_size > 1:
        import torch.distributed as td

        value = value.clone()
        td.all_reduce(value)
        value /= dist.world_size
    return float(value)


def _gather_digests(model: nn.Module, dist: Dist) -> list[str]:
    """A hash of the weights on every rank (they must agree under DDP)."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().float().cpu().numpy().tobytes())
    digest = h.hexdigest()[:16]
    if dist.world_size == 1:
        return [digest]
    import torch.distributed as td

    out: list[Any] = [None] * dist.world_size
    td.all_gather_object(out, digest)
    return out


def _held_out(kind: str, config: TrainConfig) -> torch.Tensor:
    """A fixed batch from sample indices training never reaches (far beyond its stream)."""
    indices = (
        [10**9 + i for i in range(4)] if kind != "videos" else [2 * 10**9 + 2 * i for i in range(4)]
    )
    return torch.stack([make_sample(kind, config.data, i) for i in indices]) * 2 - 1  # type: ignore[arg-type]


@torch.no_grad()
def _eval_loss(model: nn.Module, clean: torch.Tensor, bf16: bool, device: torch.device) -> float:
    """The loss on the held-out batch, averaged over 4 fixed draws of masks, times and noise."""
    total = 0.0
    for k in range(4):
        g = torch.Generator().manual_seed(12345 + k)
        known = random_known(clean.shape[0], clean.shape[1], clean.shape[2], g)
        with _autocast(bf16, device):
            total += float(masked_velocity_loss(model, clean.to(device), known, g))
    return total / 4
