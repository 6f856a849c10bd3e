"""Feature extraction: the backbone's pooled feature vector (the classifier's input) for every view of
every video of a split or a list of files, from a checkpoint.

Formats: ``npy`` writes ``<out>/<split>/<video path relative to data.root>.npy`` per video, (V, D) or (D,)
with ``mean_views``; ``split`` writes ``<out>/<split>_features.npy``, (N, V, D) or (N, D), and
``<out>/<split>_index.csv`` (row, video, label). Under torchrun each rank extracts a disjoint shard
(each video once); ``split`` gathers the rows on rank 0. AMP (``train.amp``) applies on a GPU.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from ..datasets import VideoDataset
from . import distributed
from .checkpoint import load_checkpoint
from .config import parse_views
from .data import Shard, build_dataset, clip_config, loader
from .evaluate import autocast
from .inference import trained_model

FORMATS = ("npy", "split")


def classifier_of(model: nn.Module) -> nn.Linear:
    """The model's classifier: its last ``nn.Linear``, whose input is the pooled feature vector."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to take features from")
    return linears[-1]


@torch.no_grad()
def extract(model: nn.Module, batches, device: torch.device, amp: str = "none",
            progress: bool = False) -> tuple[list[int], torch.Tensor]:
    """Dataset indices and features (N, V, D) of every video ``batches`` yields (the classifier's input per view)."""
    captured: list[torch.Tensor] = []
    hook = classifier_of(model).register_forward_pre_hook(lambda module, args: captured.append(args[0].float()))
    model.eval()
    indices, features = [], []
    try:
        for batch in tqdm(batches, desc="features", disable=not progress, leave=False):
            if not batch["label"].numel():
                continue
            video = batch["video"].to(device, non_blocking=True)
            if video.dim() == 5:
                video = video.unsqueeze(1)
            b, v = video.shape[:2]
            captured.clear()
            with autocast(device, amp if device.type == "cuda" else "none"):
                model(video.flatten(0, 1))
            features.append(captured[0].reshape(b, v, -1).cpu())
            indices += batch["index"].tolist()
    finally:
        hook.remove()
    return indices, torch.cat(features) if features else torch.empty(0, 0, 0)


def _relative(path: str, root: Optional[str]) -> Path:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()) if root else Path(Path(path).name)
    except ValueError:
        return Path(Path(path).name)


def extract_features(config: DictConfig, checkpoint: Union[str, Path], out: Union[str, Path], *,
                     split: str = "test", videos: Sequence[Union[str, Path]] = (), fmt: str = "npy",
                     mean_views: bool = False) -> Optional[Path]:
    """Write the features of ``split`` (or of ``videos``) with the checkpoint's network.

    Args:
        config: the run's config; ``data.*`` gives the dataset and ``test.views`` the views per video.
        checkpoint: a training checkpoint; the network is its own (see ``trained_model``).
        out: the output folder.
        split: "train" or "test" (ignored when ``videos`` is given; then the files are named "videos").
        videos: video files to use instead of a split.
        fmt: "npy" (a file per video) or "split" (one array and an index per split).
        mean_views: write the mean over views (D,) instead of every view (V, D).

    Returns the folder written (rank 0), or None on the other ranks.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    ctx = distributed.setup(config.train.device)
    try:
        state = load_checkpoint(checkpoint)
        model = trained_model(state, config, checkpoint).to(ctx.device)
        views = parse_views(config.test.views)
        if videos:
            name = "videos"
            dataset = VideoDataset([(str(v), 0) for v in videos], list(state["classes"]), train=False,
                                   clip=clip_config(config, views), backend=config.data.backend, on_error="skip")
        else:
            name = split
            dataset = build_dataset(config, "train" if split == "train" else "test", views=views, on_error="skip")
        batches = loader(dataset, Shard(len(dataset), ctx.rank, ctx.world_size), config.test.batch_size, config,
                         train=False)
        indices, features = extract(model, batches, ctx.device, config.train.amp,
                                    progress=ctx.is_main and config.train.progress)
        if mean_views:
            features = features.mean(1)
        out = Path(out)
        root = None if videos else config.data.root
        if fmt == "npy":
            for index, feature in zip(indices, features):
                target = out / name / _relative(dataset.samples[index][0], root).with_suffix(".npy")
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, feature.numpy())
            distributed.barrier()
            return out if ctx.is_main else None
        parts = distributed.gather_objects((indices, features))
        if not ctx.is_main:
            return None
        all_indices = [i for part, _ in parts for i in part]
        order = sorted(range(len(all_indices)), key=all_indices.__getitem__)     # dataset order
        stacked = torch.cat([f for _, f in parts if f.numel()])[order]
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / f"{name}_features.npy", stacked.numpy())
        with (out / f"{name}_index.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "video", "label"])
            for row, k in enumerate(order):
                path, label = dataset.samples[all_indices[k]]
                writer.writerow([row, path, label])
        return out
    finally:
        distributed.cleanup()
