"""Clip- and video-level evaluation, correct under DDP, with torchmetrics: ``score_videos`` scores every
view of every video, ``metrics`` turns the scores into accuracies, ``validate`` is the clip-level check
that training runs each epoch, and ``write_report``/``format_table`` present a test.

Each video gives V = num_clips x num_crops views. A view on its own is a "clip" prediction; the
mean of a video's view softmax scores is its "video" prediction. Under DDP each rank scores a
disjoint shard of the videos (no padding, no repeats); rank 0 gathers the scores by video index,
so every video is counted exactly once whatever the world size.
"""

from __future__ import annotations

import contextlib
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from tqdm import tqdm

from . import distributed
from .checkpoint import unwrap
from .data import Shard, loader, release_memory_before_fork
from .plots import plot_confusion


@dataclass
class Scores:
    """Per video, in dataset order: label, view softmax scores (V, num_classes); the skipped videos, and the
    partial ones (scored on the frames that decode) as (path, header frames, decoded frames)."""

    index: torch.Tensor                 # (N,)
    label: torch.Tensor                 # (N,)
    view_probs: torch.Tensor            # (N, V, num_classes)
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    partial: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def video_probs(self) -> torch.Tensor:
        return self.view_probs.mean(1)


def autocast(device: torch.device, amp: str):
    """torch.autocast for ``amp`` ("bf16" or "fp16") on ``device``; a no-op for "none"."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def score_videos(model: nn.Module, batches: DataLoader, device: torch.device, *, amp: str = "none",
                 channels_last: bool = False, progress: bool = False) -> Optional[Scores]:
    """Softmax scores of every view of every video this rank's loader yields, gathered on rank 0.

    Args:
        model: the network; called on (B * V, C, T, H, W) clips.
        batches: ``collate_clips`` batches; "video" is (B, C, T, H, W) or (B, V, C, T, H, W).
        device: where the model runs.
        amp: "none", "bf16" or "fp16" autocast.
        channels_last: feed channels_last_3d clips.
        progress: show a tqdm bar.

    Returns the Scores of all ranks on rank 0 (sorted by video index) and None on the others.
    """
    model.eval()
    index, label, probs, paths, skipped, partial = [], [], [], [], [], []
    for batch in tqdm(batches, desc="eval", disable=not progress, leave=False):
        skipped += batch["skipped"]
        partial += batch["partial"]
        if not batch["label"].numel():
            continue
        video = batch["video"].to(device, non_blocking=True)
        if video.dim() == 5:                        # one view per video
            video = video.unsqueeze(1)
        b, v = video.shape[:2]
        video = video.flatten(0, 1)
        if channels_last:
            video = video.contiguous(memory_format=torch.channels_last_3d)
        with autocast(device, amp):
            logits = model(video)
        probs.append(torch.softmax(logits.float(), dim=1).view(b, v, -1).cpu())
        index.append(batch["index"])
        label.append(batch["label"])
        paths += batch["path"]
    local = (index, label, probs, paths, skipped, partial)
    parts = distributed.gather_objects(local)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return None
    all_index = [t for part in parts for t in part[0]]
    if not all_index:
        raise RuntimeError("no video could be evaluated: " + "; ".join(f"{p}: {e}" for p, e in
                                                                     [s for part in parts for s in part[4]][:3]))
    idx = torch.cat(all_index)
    order = torch.argsort(idx)
    all_paths = [p for part in parts for p in part[3]]
    return Scores(
        index=idx[order],
        label=torch.cat([t for part in parts for t in part[1]])[order],
        view_probs=torch.cat([t for part in parts for t in part[2]])[order],
        paths=[all_paths[i] for i in order.tolist()],
        skipped=[s for part in parts for s in part[4]],
        partial=sorted(p for part in parts for p in part[5]),
    )


def metrics(scores: Scores, num_classes: int) -> dict:
    """clip/video top-1 and top-5, mean class accuracy and per-class accuracy (fractions in [0, 1])."""
    top5 = min(5, num_classes)
    n, v, _ = scores.view_probs.shape
    clip_probs = scores.view_probs.reshape(n * v, num_classes)
    clip_labels = scores.label.repeat_interleave(v)
    video = scores.video_probs

    def accuracy(probs, labels, k):
        return float(MulticlassAccuracy(num_classes, top_k=k, average="micro")(probs, labels))

    per_class = MulticlassAccuracy(num_classes, average="none")(video, scores.label)
    support = torch.bincount(scores.label, minlength=num_classes)
    present = support > 0
    return {
        "clip_top1": accuracy(clip_probs, clip_labels, 1),
        "clip_top5": accuracy(clip_probs, clip_labels, top5),
        "video_top1": accuracy(video, scores.label, 1),
        "video_top5": accuracy(video, scores.label, top5),
        "mean_class_acc": float(per_class[present].mean()),
        "per_class_acc": [float(a) if p else None for a, p in zip(per_class, present)],
        "num_videos": n,
        "num_views": v,
        "num_skipped": len(scores.skipped),
        "skipped": [{"path": p, "error": e} for p, e in scores.skipped],
        "num_partial": len(scores.partial),
        "partial": [{"path": p, "header_frames": h, "decoded_frames": d} for p, h, d in scores.partial],
    }


def write_report(scores: Scores, result: dict, classes: list[str], folder: Path) -> None:
    """metrics.json, predictions.csv (video, label, top-5 with scores) and confusion.png into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    named = dict(result)
    named["per_class_acc"] = {name: acc for name, acc in zip(classes, result["per_class_acc"])}
    (folder / "metrics.json").write_text(json.dumps(named, indent=1))
    k = min(5, len(classes))
    top_p, top_i = scores.video_probs.topk(k, dim=1)
    with (folder / "predictions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "label", *[f"top{j + 1}" for j in range(k)], *[f"score{j + 1}" for j in range(k)]])
        for path, label, ids, ps in zip(scores.paths, scores.label.tolist(), top_i.tolist(), top_p.tolist()):
            writer.writerow([path, classes[label], *[classes[i] for i in ids], *[f"{p:.4f}" for p in ps]])
    confusion = MulticlassConfusionMatrix(len(classes))(scores.video_probs, scores.label)
    plot_confusion(confusion, classes, folder / "confusion.png")


def format_table(result: dict, classes: list[str]) -> str:
    """The metrics as a markdown table, per-class accuracy after."""
    lines = ["| metric | value |", "|---|---:|"]
    for key in ("clip_top1", "clip_top5", "video_top1", "video_top5", "mean_class_acc"):
        lines.append(f"| {key} | {100 * result[key]:.2f}% |")
    views = result["num_views"]
    lines.append(f"| videos evaluated | {result['num_videos']} ({views} view{'' if views == 1 else 's'} each) |")
    lines.append(f"| videos skipped | {result['num_skipped']} |")
    lines.append(f"| videos partial (scored on the frames that decode) | {result['num_partial']} |")
    lines += ["", "| class | accuracy |", "|---|---:|"]
    lines += [f"| {name} | {'n/a' if acc is None else f'{100 * acc:.1f}%'} |"
              for name, acc in zip(classes, result["per_class_acc"])]
    for item in result["skipped"]:
        lines.append(f"skipped: {item['path']}: {item['error']}")
    for item in result["partial"]:
        lines.append(f"partial: {item['path']}: the header says {item['header_frames']} frames, "
                     f"{item['decoded_frames']} decode")
    return "\n".join(lines)


def validate(model: nn.Module, dataset, config: DictConfig, ctx: distributed.Context) -> Optional[dict]:
    """Clip-level accuracy and loss on the held-out split (one centre view per video); None off rank 0."""
    shard = loader(dataset, Shard(len(dataset), ctx.rank, ctx.world_size), config.test.batch_size, config,
                   train=False)
    release_memory_before_fork(shard)
    scores = score_videos(unwrap(model), shard, ctx.device, amp=config.train.amp,
                          channels_last=config.train.channels_last, progress=ctx.is_main and config.train.progress)
    if scores is None:
        return None
    result = metrics(scores, len(dataset.classes))
    probs = scores.video_probs.clamp(min=1e-12)
    loss = float(F.nll_loss(probs.log(), scores.label))
    return {"val_loss": loss, "val_top1": result["clip_top1"], "val_top5": result["clip_top5"],
            "val_videos": result["num_videos"], "val_skipped": result["num_skipped"]}
