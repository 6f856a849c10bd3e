"""Feature extraction: the backbone's pooled feature vector (the classifier's input) for every view of
every video of a split or a list of files, from a checkpoint.

The classifier is the model's last ``nn.Linear`` or convolution (S3D's is a 1x1x1 ``Conv3d``); its input,
flattened, is the feature vector, so ``logits = features @ W.reshape(num_classes, -1).T + b``.

Formats: ``npy`` writes ``<out>/<split>/<video path relative to data.root>.npy`` per video, (V, D) or (D,)
with ``mean_views`` (the path keeps its folders and loses its suffix: ``a/clip.mp4`` -> ``a/clip.npy``;
with ``videos`` the paths are relative to the files' common folder, and the name is "videos"). Two
inputs that would write one file are an error before anything runs. ``split`` writes
``<out>/<split>_features.npy``, (N, V, D) or (N, D), and ``<out>/<split>_index.csv`` (row, video,
label; the label is empty for ``videos``). Under torchrun each rank extracts a disjoint shard
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
from .data import DataError, Shard, build_dataset, clip_config, loader
from .evaluate import autocast
from .inference import output_stems, trained_model

FORMATS = ("npy", "split")


CLASSIFIER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def classifier_of(model: nn.Module) -> nn.Module:
    """The model's classifier: its last ``nn.Linear`` or convolution, whose input is the pooled feature vector.

    Every model of ``build_model`` ends in one: an ``nn.Linear`` (``fc``, ``classifier``), or S3D's 1x1x1
    ``nn.Conv3d`` on the pooled (N, D, 1, 1, 1) map.
    """
    layers = [m for m in model.modules() if isinstance(m, CLASSIFIER_TYPES)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear or convolution to take features from")
    return layers[-1]


def classifier_weights(layer: nn.Module) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The classifier as a matrix (num_classes, D) and bias (num_classes,) on flattened features."""
    return layer.weight.reshape(layer.weight.shape[0], -1), layer.bias


@torch.no_grad()
def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: the classifier's input flattened to (N, D) in float32, and the logits (N, num_classes)."""
    captured: list[torch.Tensor] = []
    hook = classifier_of(model).register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        logits = model(x)
    finally:
        hook.remove()
    if len(captured) != 1:
        raise RuntimeError(f"{type(model).__name__}'s classifier ran {len(captured)} times in one forward pass")
    return captured[0].float().flatten(1), logits


@torch.no_grad()
def extract(model: nn.Module, batches, device: torch.device, amp: str = "none",
            progress: bool = False, skipped: Optional[list] = None) -> tuple[list[int], torch.Tensor]:
    """Dataset indices and features (N, V, D) of every video ``batches`` yields (the classifier's input per view).

    The (path, error) of each video a batch left out is appended to ``skipped`` when it is given.
    """
    model.eval()
    indices, features = [], []
    for batch in tqdm(batches, desc="features", disable=not progress, leave=False):
        if skipped is not None:
            skipped += batch["skipped"]
        if not batch["label"].numel():
            continue
        video = batch["video"].to(device, non_blocking=True)
        if video.dim() == 5:
            video = video.unsqueeze(1)
        b, v = video.shape[:2]
        with autocast(device, amp if device.type == "cuda" else "none"):
            feature, _ = features_and_logits(model, video.flatten(0, 1))
        features.append(feature.reshape(b, v, -1).cpu())
        indices += batch["index"].tolist()
    return indices, torch.cat(features) if features else torch.empty(0, 0, 0)


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

    Raises DataError (on rank 0, after writing the others) when one of ``videos``, or every video of the
    split, gives no features; and before any work when a file of ``videos`` is missing or two videos
    would write one ``npy`` file.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    ctx = distributed.setup(config.train.device)
    try:
        state = load_checkpoint(checkpoint)
        model = trained_model(state, config, checkpoint).to(ctx.device)
        views = parse_views(config.test.views)
        if videos:
            missing = [str(v) for v in videos if not Path(v).exists()]
            if missing:
                raise DataError(f"videos: no such file: {', '.join(missing)}")
            name = "videos"
            dataset = VideoDataset([(str(v), 0) for v in videos], list(state["classes"]), train=False,
                                   clip=clip_config(config, views), backend=config.data.backend, on_error="skip")
        else:
            name = split
            dataset = build_dataset(config, "train" if split == "train" else "test", views=views, on_error="skip")
        paths = [path for path, _ in dataset.samples]
        out = Path(out)
        if fmt == "npy":     # where each video's file goes, checked for clashes before anything runs
            try:
                stems = output_stems(paths, None if videos else config.data.root)
            except ValueError as error:
                raise DataError(str(error)) from None
        batches = loader(dataset, Shard(len(dataset), ctx.rank, ctx.world_size), config.test.batch_size, config,
                         train=False)
        skipped: list[tuple[str, str]] = []
        indices, features = extract(model, batches, ctx.device, config.train.amp,
                                    progress=ctx.is_main and config.train.progress, skipped=skipped)
        if mean_views:
            features = features.mean(1)
        if fmt == "npy":
            for index, feature in zip(indices, features):
                target = out / name / stems[index].parent / f"{stems[index].name}.npy"
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, feature.numpy())
            parts = distributed.gather_objects(([], None, skipped))
        else:
            parts = distributed.gather_objects((indices, features, skipped))
        if not ctx.is_main:
            return None
        failed = [item for _, _, part in parts for item in part]
        if fmt == "split" and len(failed) < len(paths):
            all_indices = [i for part, _, _ in parts for i in part]
            order = sorted(range(len(all_indices)), key=all_indices.__getitem__)     # dataset order
            stacked = torch.cat([f for _, f, _ in parts if f.numel()])[order]
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / f"{name}_features.npy", stacked.numpy())
            with (out / f"{name}_index.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["row", "video", "label"])
                for row, k in enumerate(order):
                    path, label = dataset.samples[all_indices[k]]
                    writer.writerow([row, path, "" if videos else label])   # files given have no label
        # Files asked for by name must each give features; a split's bad videos are skipped (and logged).
        if failed and (videos or len(failed) == len(paths)):
            others = len(paths) - len(failed)
            written = f" (the other {others} are written under {out})" if others else ""
            raise DataError(f"no features for {len(failed)} of {len(paths)} videos{written}: "
                            + "; ".join(f"{path}: {error}" for path, error in failed))
        return out
    finally:
        distributed.cleanup()
