"""The training loop: explicit, one epoch at a time, in the manner of torchvision's video reference.

``train(config)`` runs one experiment, plainly or under torchrun (one process per GPU or CPU
share), and writes into ``<output_dir>/<name>/``: config.yaml, last.pt and best.pt, metrics.jsonl
(one line per epoch), curves.png, and TensorBoard logs under tb/.

Reproducibility: the data a step sees and its dropout masks are functions of (seed, rank, epoch,
batch), so ``resume=auto`` continues exactly where last.pt stopped, at the same epoch, step and LR.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ..datasets import ClipConfig
from ..models.pretrained import resolve
from . import distributed, host
from .builders import build_optimizer, model_from_config, warmup_cosine
from .checkpoint import (CLIP_KEYS, CheckpointError, load_checkpoint, load_pretrained, rng_state, save_checkpoint,
                         set_rng_state, unwrap)
from .config import ConfigError, save_config, to_plain
from .data import (DataError, EpochOrder, SeededSamples, build_dataset, check_backend, check_classes,
                   ensure_synthmotion, loader, release_memory_before_fork, stop_workers, train_sampler)
from .evaluate import autocast, validate
from .plots import plot_curves

logger = logging.getLogger("softpool3d.engine")


def run_dir(config: DictConfig) -> Path:
    return Path(config.output_dir) / config.name


def seed_step(seed: int, rank: int, epoch: int, batch: int) -> None:
    """Seed every RNG from the step's coordinates, so a resumed run repeats the same randomness."""
    value = (((seed * 1_000_003 + rank) * 100_003 + epoch) * 1_000_033 + batch) % 2**63
    torch.manual_seed(value)
    random.seed(value)


def model_in_sync(model: nn.Module) -> bool:
    """True when every rank holds the same weights and buffers (BatchNorm statistics): compares a float64
    checksum of each."""
    bare = unwrap(model)
    with torch.no_grad():
        checksums = [sum(float(t.double().sum()) + float((t.double() ** 2).sum()) for t in tensors)
                     for tensors in (bare.parameters(), bare.buffers())]
    values = distributed.gather_objects(checksums)
    return all(v == values[0] for v in values)


def share_buffers_of_rank_0(model: nn.Module) -> None:
    """Every rank takes rank 0's buffers. DDP sends them at the start of each training forward, and
    that forward then updates each rank's BatchNorm statistics from its own batch; so after the last
    step they differ, and validation would run each shard through another model than the one saved."""
    if not torch.distributed.is_initialized():
        return
    with torch.no_grad():
        for buffer in unwrap(model).buffers():
            torch.distributed.broadcast(buffer, src=0)


@dataclass
class Run:
    """Everything one training run holds; built once by ``prepare``, advanced by the epoch functions."""

    config: DictConfig
    ctx: distributed.Context
    folder: Path
    classes: list[str]
    order: EpochOrder                 # which (epoch, video) keys the next epoch trains on
    batches: torch.utils.data.DataLoader   # every epoch's batches; its workers persist
    val_set: Any
    model: nn.Module                  # the bare model (what checkpoints hold)
    net: nn.Module                    # what the steps call: model, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    batches_per_epoch: int
    memory_format: torch.memory_format
    writer: Optional[SummaryWriter] = None
    epoch: int = 0                    # epochs finished
    step: int = 0                     # optimizer steps taken
    skip_batches: int = 0             # batches of epoch ``epoch`` already done (a mid-epoch resume)
    best: float = -1.0                # best validated clip top-1
    best_epoch: Optional[int] = None  # the epoch best.pt holds
    history: list = field(default_factory=list)
    clip: Optional[ClipConfig] = None  # the training data's: checkpoints record its normalisation and clip

    def checkpoint(self, batch_in_epoch: int) -> dict:
        made = {}
        if self.clip is not None:   # resolved, as plain floats and ints (a fine-tune from this file reads them)
            made = {"normalisation": {"mean": [float(v) for v in self.clip.mean],
                                      "std": [float(v) for v in self.clip.std]},
                    "clip": {key: int(getattr(self.clip, key)) for key in CLIP_KEYS}}
        return made | {
            "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": batch_in_epoch, "best_top1": self.best,
            "best_epoch": self.best_epoch, "history": self.history, "config": to_plain(self.config),
            "classes": self.classes, "rng": rng_state(),
        }


def prepare(config: DictConfig, ctx: distributed.Context) -> Run:
    """Data, model, optimizer, schedule and resume; every data problem surfaces here, before training."""
    if config.train.amp == "fp16" and ctx.device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA GPU (it uses a GradScaler); on the CPU use bf16 or none")
    check_backend(config)
    folder = run_dir(config)
    torch.manual_seed(config.seed)
    if config.data.dataset == "synthmotion":
        if ctx.is_main:
            ensure_synthmotion(config)
        distributed.barrier()
    if config.model.pretrained:   # fetched before the data is built: a checkpoint's normalisation is read from it
        resolve(config.model.name, str(config.model.pretrained))
    train_set = build_dataset(config, "train")
    val_set = build_dataset(config, "val", on_error=config.test.on_error)
    check_classes(train_set, val_set)
    classes = list(train_set.classes)
    if len(train_set) < config.train.batch_size * ctx.world_size:
        raise DataError(f"the train split has {len(train_set)} videos, fewer than one batch "
                        f"({config.train.batch_size} x {ctx.world_size} processes); lower train.batch_size")
    seeded = SeededSamples(train_set, config.seed)
    sampler = train_sampler(seeded, config, ctx.rank, ctx.world_size)
    order = EpochOrder(sampler)
    batches_per_epoch = len(sampler) // config.train.batch_size
    steps_per_epoch = steps_in_epoch(batches_per_epoch, config.train.accumulate)

    model = model_from_config(config, len(classes))
    if config.model.pretrained:
        load_pretrained(model, config.model.pretrained, name=config.model.name)
    memory_format = torch.channels_last_3d if config.train.channels_last else torch.contiguous_format
    model.to(ctx.device, memory_format=memory_format)
    optimizer = build_optimizer(config, model, ctx.world_size)
    total_steps = steps_per_epoch * config.train.epochs
    warmup_steps = round(config.optim.warmup_epochs * steps_per_epoch)
    min_factor = config.optim.min_lr / optimizer.param_groups[0]["lr"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, warmup_steps, config.optim.warmup_start_factor, min_factor))
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=config.train.amp == "fp16")
    net: nn.Module = model
    if ctx.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                                  else None)
    if config.train.compile:
        net = torch.compile(net)
    batches = loader(seeded, order, config.train.batch_size, config, train=True)
    run = Run(config, ctx, folder, classes, order, batches, val_set, model, net, optimizer, scheduler, scaler,
              nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing), batches_per_epoch, memory_format,
              clip=train_set.clip)

    resume = config.resume
    if resume == "auto":
        resume = folder / "last.pt" if (folder / "last.pt").exists() else None
    if resume:
        state = load_checkpoint(resume)
        if state["classes"] != classes:
            raise CheckpointError(f"{resume} was trained on other classes than data.* now gives")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        run.epoch, run.step, run.skip_batches = state["epoch"], state["step"], state["batch_in_epoch"]
        run.best, run.best_epoch, run.history = state["best_top1"], state.get("best_epoch"), list(state["history"])
        if "rng" in state:
            set_rng_state(state["rng"])
        if ctx.is_main:
            logger.info("resumed from %s at epoch %d, step %d (batch %d of the epoch)", resume, run.epoch, run.step,
                        run.skip_batches)
    return run


def steps_in_epoch(batches: int, accumulate: int) -> int:
    """Optimizer steps per epoch: one per ``accumulate`` batches, and one more for a partial group at the end."""
    return -(-batches // accumulate)


def group_size(batch_index: int, batches: int, accumulate: int) -> int:
    """How many batches the accumulation group of batch ``batch_index`` has (fewer in an epoch's last group).

    No gradient outlives its epoch: an epoch's last batch always steps, so a run resumed at an epoch
    boundary continues exactly as the uninterrupted run does.
    """
    first = batch_index - batch_index % accumulate
    return min(accumulate, batches - first)


def train_one_epoch(run: Run) -> tuple[torch.Tensor, bool]:
    """Train epoch ``run.epoch`` (from ``run.skip_batches`` on a resume).

    Returns this rank's (loss sum, correct, clips) and whether ``train.stop_after_steps`` was reached;
    then last.pt is saved here, at the batch where training stopped.
    """
    config, ctx = run.config, run.ctx
    epoch, first, accumulate = run.epoch, run.skip_batches, config.train.accumulate
    run.order.start(epoch, skip=first * config.train.batch_size)
    release_memory_before_fork(run.batches)
    run.net.train()
    sums = torch.zeros(3, dtype=torch.float64)         # loss * n, correct, n
    started = time.perf_counter()
    bar = tqdm(total=run.batches_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{config.train.epochs}",
               disable=not (ctx.is_main and config.train.progress), dynamic_ncols=True)
    with bar:
        for batch_index, batch in enumerate(run.batches, start=first):
            seed_step(config.seed, ctx.rank, epoch, batch_index)
            video = batch["video"].to(ctx.device, non_blocking=True).contiguous(memory_format=run.memory_format)
            label = batch["label"].to(ctx.device, non_blocking=True)
            group = group_size(batch_index, run.batches_per_epoch, accumulate)
            stepping = (batch_index + 1) % accumulate == 0 or batch_index + 1 == run.batches_per_epoch
            sync = contextlib.nullcontext() if stepping or ctx.world_size == 1 else run.net.no_sync()
            with sync:
                with autocast(ctx.device, config.train.amp):
                    logits = run.net(video)
                    loss = run.criterion(logits.float(), label)
                run.scaler.scale(loss / group).backward()     # the group's mean gradient
            if stepping:
                optimizer_step(run)
            n = label.numel()
            sums += torch.tensor([float(loss.detach()) * n, float((logits.argmax(1) == label).sum()), n],
                                 dtype=torch.float64)
            elapsed = time.perf_counter() - started
            bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{100 * sums[1] / sums[2]:.1f}%",
                            clips_s=f"{sums[2] * ctx.world_size / max(elapsed, 1e-9):.1f}",
                            lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
            bar.update(1)
            if run.writer is not None and stepping and run.step % config.train.log_every == 0:
                run.writer.add_scalar("train/loss", float(loss.detach()), run.step)
                run.writer.add_scalar("train/lr", run.scheduler.get_last_lr()[0], run.step)
            if stepping and config.train.stop_after_steps and run.step >= config.train.stop_after_steps:
                if ctx.is_main:
                    save_config(config, run.folder / "config.yaml")
                    save_checkpoint(run.checkpoint(batch_index + 1), run.folder / "last.pt")
                    logger.info("stopped after %d steps as train.stop_after_steps asks; last.pt saved", run.step)
                return sums, True
    return sums, False


def optimizer_step(run: Run) -> None:
    if run.config.train.clip_grad_norm:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.config.train.clip_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.step += 1


def end_of_epoch(run: Run, sums: torch.Tensor, seconds: float) -> None:
    """Validate (every ``train.val_every`` epochs and after the last) with rank 0's buffers on every rank,
    check that the ranks hold one model, checkpoint and log.

    best.pt is written only for a validated epoch that improves clip top-1; its ``best_epoch`` names it.
    """
    config, ctx = run.config, run.ctx
    epoch = run.epoch + 1
    loss_sum, correct, count = distributed.all_sum(sums.tolist(), ctx.device)
    record = {"epoch": epoch, "step": run.step, "lr": run.scheduler.get_last_lr()[0],
              "train_loss": loss_sum / max(count, 1), "train_top1": correct / max(count, 1),
              "train_clips": int(count), "epoch_seconds": round(seconds, 1)}
    share_buffers_of_rank_0(run.model)      # validate and save one model
    if config.train.val_every and (epoch % config.train.val_every == 0 or epoch == config.train.epochs):
        val = validate(run.net, run.val_set, config, ctx)
        if val is not None:
            record.update(val)
    record["ranks_in_sync"] = model_in_sync(run.model)
    if not record["ranks_in_sync"]:        # every rank sees the gathered checksums, so every rank stops
        raise RuntimeError(f"the processes' weights differ after epoch {epoch}; DDP is out of sync")
    run.epoch, run.skip_batches = epoch, 0
    if ctx.is_main:
        run.history.append(record)
        improved = "val_top1" in record and record["val_top1"] > run.best
        if improved:
            run.best, run.best_epoch = record["val_top1"], epoch
        state = run.checkpoint(0)
        save_config(config, run.folder / "config.yaml")
        save_checkpoint(state, run.folder / "last.pt")
        if improved:
            save_checkpoint(state, run.folder / "best.pt")
        # Rewritten from the history each epoch, so a resumed run never repeats or loses a line.
        (run.folder / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in run.history))
        for key, value in record.items():
            if isinstance(value, float) and key != "epoch":
                run.writer.add_scalar(f"epoch/{key}", value, epoch)
        plot_curves(run.history, run.folder / "curves.png")
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
        tqdm.write(f"epoch {epoch}: {shown}")
    distributed.barrier()


def reuse_freed_memory_for(config: DictConfig) -> bool:
    """For a process that is one training run and nothing else (``tools/train.py``): on the CPU with
    ``train.reuse_freed_memory``, glibc keeps freed memory for the next step (``host.reuse_freed_memory``).

    It changes the whole process's allocator for good, so ``train()`` itself never applies it: a notebook
    that trains gets its freed memory back as before. Returns True when applied.
    """
    on_cpu = config.train.device == "cpu" or (config.train.device == "auto" and not torch.cuda.is_available())
    return on_cpu and config.train.reuse_freed_memory and host.reuse_freed_memory()


def train(config: DictConfig) -> Path:
    """Run the experiment ``config`` describes; returns the run folder.

    The process group, the TensorBoard writer and the data workers are torn down on every exit:
    the end, ``train.stop_after_steps``, an exception or Ctrl-C. Process-wide settings are left as
    they were (see ``reuse_freed_memory_for``).
    """
    ctx = distributed.setup(config.train.device)
    run = None
    try:
        run = prepare(config, ctx)
        if ctx.is_main:
            run.folder.mkdir(parents=True, exist_ok=True)
            # An existing run's config.yaml is replaced together with its last.pt, never by a start that fails.
            if not (run.folder / "config.yaml").exists():
                save_config(config, run.folder / "config.yaml")
            run.writer = SummaryWriter(str(run.folder / "tb"))
            logger.info("run folder %s: %s (%s pool), %d classes, %d train / %d val videos, %d batches per epoch",
                        run.folder, config.model.name, config.model.pool, len(run.classes), len(run.batches.dataset),
                        len(run.val_set), run.batches_per_epoch)
        while run.epoch < config.train.epochs:
            started = time.perf_counter()
            sums, stopped = train_one_epoch(run)
            if stopped:
                distributed.barrier()
                break
            end_of_epoch(run, sums, time.perf_counter() - started)
        return run.folder
    finally:
        if run is not None:
            stop_workers(run.batches)
            if run.writer is not None:
                run.writer.close()
        distributed.cleanup()
