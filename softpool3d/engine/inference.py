"""Testing a checkpoint on a held-out split (multi-view) and predicting single videos.

The network is always the one the checkpoint was trained as: its name, pool and head_pool come from
the config stored in the checkpoint, and its class count from the stored class names. Pools have no
weights, so a checkpoint would load into a network with other pools without a word; a test config
that disagrees with the checkpoint on any of these is an error instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from omegaconf import DictConfig
from torch import nn

from ..datasets import VideoDataset
from . import distributed
from .checkpoint import load_checkpoint
from .config import ConfigError, from_plain, parse_views
from .data import DataError, Shard, build_dataset, clip_config, loader
from .builders import model_from_config
from .evaluate import metrics, score_videos, write_report

logger = logging.getLogger("softpool3d.engine")


ARCHITECTURE_KEYS = ("name", "pool", "head_pool")


def trained_model(state: dict, config: DictConfig, source: Union[str, Path]) -> nn.Module:
    """The network a checkpoint holds (eval mode, on the CPU), built from the config stored in it.

    Args:
        state: the loaded checkpoint (``model``, ``config`` and ``classes``).
        config: the config of this run; ``model.name``, ``model.pool`` and ``model.head_pool`` must
            agree with the checkpoint's, or a ``ConfigError`` names the key and both values.
        source: the checkpoint's path, for messages.
    """
    trained = from_plain(state["config"])
    for key in ARCHITECTURE_KEYS:
        if config.model[key] != trained.model[key]:
            raise ConfigError(
                f"model.{key}: {source} was trained with {trained.model[key]!r} but the config says "
                f"{config.model[key]!r}; drop that setting or test with the training config"
            )
    model = model_from_config(trained, len(state["classes"]))
    model.load_state_dict(state["model"])
    return model.eval()


def model_from_checkpoint(path: Union[str, Path], overrides: Sequence[str] = ()) -> tuple[nn.Module, DictConfig,
                                                                                          list[str]]:
    """The trained model (eval mode, on the CPU), its config (with overrides) and class names."""
    state = load_checkpoint(path)
    config = from_plain(state["config"], overrides)
    return trained_model(state, config, path), config, list(state["classes"])


def run_test(config: DictConfig, checkpoint: Union[str, Path]) -> Optional[tuple[dict, Path, list[str]]]:
    """Multi-view test of ``checkpoint`` on ``config``'s held-out split; writes the report.

    The network is the checkpoint's own (see ``trained_model``); data and test settings come from ``config``.

    Returns (metrics, report folder, class names) on rank 0 and None on other ranks.
    """
    ctx = distributed.setup(config.train.device)
    try:
        state = load_checkpoint(checkpoint)
        classes = list(state["classes"])
        model = trained_model(state, config, checkpoint)
        memory_format = torch.channels_last_3d if config.train.channels_last else torch.contiguous_format
        model.to(ctx.device, memory_format=memory_format)

        views = parse_views(config.test.views)
        dataset = build_dataset(config, "test", views=views, on_error=config.test.on_error)
        if list(dataset.classes) != classes:
            raise DataError(f"{checkpoint} was trained on {len(classes)} classes that differ from the test split's "
                             f"{len(dataset.classes)}; check data.* against the training config")
        batches = loader(dataset, Shard(len(dataset), ctx.rank, ctx.world_size), config.test.batch_size, config,
                         train=False)
        scores = score_videos(model, batches, ctx.device, amp=config.train.amp,
                              channels_last=config.train.channels_last, progress=ctx.is_main and config.train.progress)
    finally:
        distributed.cleanup()
    if scores is None:
        return None
    result = metrics(scores, len(classes))
    folder = Path(config.test.output_dir) if config.test.output_dir else Path(checkpoint).resolve().parent / "test"
    write_report(scores, result, classes, folder)
    return result, folder, classes


def output_stems(paths: Sequence[Union[str, Path]], root: Optional[Union[str, Path]] = None) -> list[Path]:
    """Where each input's outputs go, relative to an output folder: its path without the suffix.

    The path is taken relative to ``root`` when every input is under it, else relative to the inputs'
    common folder, so ``a/clip.mp4`` and ``b/clip.mp4`` give ``a/clip`` and ``b/clip``, and one file gives
    its own name. Callers append their own endings (``clip`` -> ``clip.npy``, ``clip_windows.csv``).

    Raises ValueError naming two inputs that would share outputs (``a/clip.mp4`` and ``a/clip.avi``, or
    one file given twice).
    """
    resolved = [Path(p).resolve() for p in paths]
    if not resolved:
        return []
    base = Path(root).resolve() if root is not None else None
    if base is None or not all(p.is_relative_to(base) for p in resolved):
        base = Path(os.path.commonpath([p.parent for p in resolved]))
    stems: list[Path] = []
    first_with: dict[Path, int] = {}
    for k, path in enumerate(resolved):
        relative = path.relative_to(base)
        stem = relative.with_name(relative.name[: -len(relative.suffix)] if relative.suffix else relative.name)
        if stem in first_with:
            other = paths[first_with[stem]]
            if resolved[first_with[stem]] == path:
                raise ValueError(f"{paths[k]} is given twice")
            raise ValueError(f"{other} and {paths[k]} would write the same outputs ({stem}.*); rename one or "
                             "process them in separate runs")
        first_with[stem] = k
        stems.append(stem)
    return stems


def predict(model: nn.Module, classes: list[str], config: DictConfig, videos: Sequence[Union[str, Path]], *,
            views: tuple[int, int] = (1, 1), top: int = 5) -> list[list[tuple[str, float]]]:
    """For each video file, the ``top`` classes and probabilities (view softmax scores averaged).

    Args:
        model: the trained network, in eval mode.
        classes: its class names, in label order.
        config: the run's config; ``data.*`` says how clips are sampled and transformed.
        videos: video files (or rawframes folders).
        views: (clips, crops) averaged per video.
        top: how many classes to return.
    """
    results = []
    for path in videos:
        dataset = VideoDataset([(str(path), 0)], ["?"], train=False, clip=clip_config(config, views),
                               backend=config.data.backend, on_error="raise")
        video = dataset[0]["video"]
        batch = video.unsqueeze(0) if video.dim() == 4 else video
        with torch.no_grad():
            probs = torch.softmax(model(batch).float(), dim=1).mean(0)
        p, i = probs.topk(min(top, len(classes)))
        results.append([(classes[k], float(v)) for k, v in zip(i.tolist(), p.tolist())])
    return results


__all__ = ["model_from_checkpoint", "output_stems", "predict", "run_test", "trained_model"]
