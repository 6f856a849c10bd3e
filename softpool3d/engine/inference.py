"""Testing a checkpoint on a held-out split (multi-view) and predicting single videos."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from omegaconf import DictConfig
from torch import nn

from ..datasets import VideoDataset
from . import distributed
from .checkpoint import load_checkpoint
from .config import from_plain, parse_views
from .data import Shard, build_dataset, clip_config, loader
from .evaluate import Scores, format_table, metrics, score_videos, write_report
from .train import model_from_config

logger = logging.getLogger("softpool3d.engine")


def model_from_checkpoint(path: Union[str, Path], overrides: Sequence[str] = ()) -> tuple[nn.Module, DictConfig,
                                                                                          list[str]]:
    """The trained model (eval mode, on the CPU), its config (with overrides) and class names."""
    state = load_checkpoint(path)
    config = from_plain(state["config"], overrides)
    classes = list(state["classes"])
    model = model_from_config(config, len(classes))
    model.load_state_dict(state["model"])
    return model.eval(), config, classes


def run_test(config: DictConfig, checkpoint: Union[str, Path]) -> Optional[tuple[dict, Path, list[str]]]:
    """Multi-view test of ``checkpoint`` on ``config``'s held-out split; writes the report.

    Returns (metrics, report folder, class names) on rank 0 and None on other ranks.
    """
    ctx = distributed.setup(config.train.device)
    state = load_checkpoint(checkpoint)
    classes = list(state["classes"])
    model = model_from_config(config, len(classes))
    model.load_state_dict(state["model"])
    memory_format = torch.channels_last_3d if config.train.channels_last else torch.contiguous_format
    model.to(ctx.device, memory_format=memory_format)

    views = parse_views(config.test.views)
    dataset = build_dataset(config, "test", views=views, on_error=config.test.on_error)
    if list(dataset.classes) != classes:
        raise ValueError(f"{checkpoint} was trained on {len(classes)} classes that differ from the test split's "
                         f"{len(dataset.classes)}; check data.* against the training config")
    batches = loader(dataset, Shard(len(dataset), ctx.rank, ctx.world_size), config.test.batch_size, config,
                     train=False)
    scores = score_videos(model, batches, ctx.device, amp=config.train.amp, channels_last=config.train.channels_last,
                          progress=ctx.is_main and config.train.progress)
    distributed.cleanup()
    if scores is None:
        return None
    result = metrics(scores, len(classes))
    folder = Path(config.test.output_dir) if config.test.output_dir else Path(checkpoint).resolve().parent / "test"
    write_report(scores, result, classes, folder)
    return result, folder, classes


def predict(model: nn.Module, classes: list[str], config: DictConfig, videos: Sequence[Union[str, Path]], *,
            views: tuple[int, int] = (1, 1), top: int = 5) -> list[list[tuple[str, float]]]:
    """For each video file, the ``top`` classes and probabilities (view softmax scores averaged)."""
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


__all__ = ["Scores", "format_table", "model_from_checkpoint", "predict", "run_test"]
