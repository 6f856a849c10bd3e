"""Datasets and loaders from a config, and the sampling that makes training reproducible.

Training data is a pure function of (seed, epoch, sample index): the order comes from a
``DistributedSampler`` seeded with the config's seed and the epoch, and each sample's random
clip and crop from an RNG seeded with (seed, epoch, index) (``SeededSamples``). A run resumed
mid-epoch therefore sees the very batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..datasets import HMDB51, UCF101, ClipConfig, Kinetics, VideoDataset, VideoFolder, VideoList, collate_clips
from ..datasets.io import available_backends
from ..datasets.kinetics import read_class_list
from ..datasets.video_dataset import log_failures
from ..datasets.synthetic import make_synthmotion
from ..datasets.transforms import KINETICS_MEAN, KINETICS_STD
from .checkpoint import trained_with
from .config import unpaired_mirror_classes
from .host import release_freed_memory

logger = logging.getLogger("softpool3d.engine")


class DataError(ValueError):
    """A data problem found before training: the message says what to fix."""


def clip_config(config: DictConfig, views: tuple[int, int] = (1, 1)) -> ClipConfig:
    """The clip sampling and transforms ``data.*`` describes, with (clips, crops) test views."""
    data = config.data
    # Unset: on, except for SynthMotion with a kept class that a flip relabels and no pair for it (a plain flip
    # would change its label).
    flip = not unpaired_mirror_classes(data) if data.flip is None else data.flip
    return ClipConfig(clip_len=data.clip_len, frame_interval=data.frame_interval, short_side=data.short_side,
                      crop_size=data.crop_size, min_area=data.min_area, flip=flip,
                      flip_pairs=tuple(tuple(pair) for pair in data.flip_pairs),
                      num_clips=views[0], num_crops=views[1], **normalisation(config))


def normalisation(config: DictConfig) -> dict[str, tuple[float, ...]]:
    """``data.mean`` and ``data.std`` where set; unset, those of the weights ``model.pretrained`` names: a tag
    (e.g. "kinetics400"), or a softpool3d checkpoint (a path, or a URL already in torch.hub's cache) whose
    recorded normalisation counts (see ``checkpoint.trained_with``); else ``ClipConfig``'s defaults (an empty
    dict). Says once what it took, and warns where the config differs from what the weights were trained with."""
    from ..models.pretrained import WEIGHTS, is_url, local_file, normalisation_notes

    model, data = config.get("model"), config.data
    chosen = {key: tuple(data[key]) for key in ("mean", "std") if data.get(key) is not None}
    if model is None or not model.pretrained:
        return chosen
    weights = WEIGHTS.get((model.name, model.pretrained))
    if weights is not None:
        chosen = {"mean": weights.mean, "std": weights.std} | chosen
        normalisation_notes(weights, data.clip_len, data.crop_size, chosen["mean"], chosen["std"])
        return chosen
    path = local_file(model.name, model.pretrained)
    if path is None and not is_url(str(model.pretrained)) and len(chosen) < 2 and model.pretrained not in _noted:
        _noted.add(model.pretrained)   # e.g. testing a fine-tune whose starting checkpoint has been deleted since
        logger.warning("model.pretrained=%s is not there: the normalisation it was trained with is unknown; "
                       "normalising with data.mean / data.std or Kinetics' (set them to the checkpoint's)",
                       model.pretrained)
    trained = trained_with(path) if path is not None else {}
    if "mean" in trained or "std" in trained:
        chosen = {key: trained[key] for key in ("mean", "std") if key in trained} | chosen
        _checkpoint_notes(path, trained, data, chosen)
    return chosen


_noted: set[tuple] = set()


def _checkpoint_notes(path: Path, trained: dict, data: DictConfig, chosen: dict) -> None:
    """Log (once per setting) the normalisation taken from the checkpoint ``path``, and warn where the
    config's differs from what it was trained with (a silent loss of accuracy)."""
    compared = ("clip_len", "frame_interval", "crop_size")
    ours = {**{key: data[key] for key in compared}, **chosen}
    key = (str(path), tuple(sorted(trained.items())), tuple(sorted(ours.items())))
    if key in _noted:
        return
    _noted.add(key)
    if any(name in trained and data.get(name) is None for name in ("mean", "std")):
        said = [f"{name} {ours.get(name, default)}" + (f" (data.{name})" if data.get(name) is not None else "")
                for name, default in (("mean", KINETICS_MEAN), ("std", KINETICS_STD))]
        clip = (f"; it was trained on {trained['clip_len']}-frame {trained['crop_size']}x{trained['crop_size']} "
                f"clips, frame interval {trained['frame_interval']}") if all(k in trained for k in compared) else ""
        logger.info("normalising with %s from %s%s", ", ".join(said), path, clip)
    differs = [f"data.{name} {ours[name]} (the checkpoint's: {trained[name]})"
               for name in ("mean", "std", *compared)
               if name in trained and name in ours and ours[name] != trained[name]]
    if differs:
        logger.warning("the config differs from what %s was trained with: %s", path, "; ".join(differs))


def synthmotion_paths(root: Path) -> tuple[Path, Path]:
    return root / "videos", root / "annotations"


def ensure_synthmotion(config: DictConfig) -> None:
    """Generate SynthMotion under ``data.root`` when it is absent and ``data.generate`` allows it."""
    root = Path(config.data.root)
    videos, annotations = synthmotion_paths(root)
    if (annotations / "classInd.txt").is_file():
        return
    if not config.data.generate:
        raise DataError(f"SynthMotion is not under data.root={root}; set data.generate=true to make it")
    # One process per core: generation comes before any training step, so it has the machine to itself.
    make_synthmotion(root, videos_per_class=config.data.synth_videos_per_class, seed=0, workers=os.cpu_count() or 1)


def check_backend(config: DictConfig) -> None:
    """A ``DataError`` unless the decoder ``data.backend`` names works here (decord and torchcodec are optional)."""
    backend = config.data.backend
    if backend != "auto" and backend not in available_backends():
        raise DataError(f"data.backend={backend} is not available here (pip install {backend}); "
                        f"available: auto, {', '.join(available_backends())}")


def _required(config: DictConfig, key: str) -> str:
    value = config.data[key]
    if not value:
        raise DataError(f"data.{key} must be set for data.dataset={config.data.dataset}")
    return value


def build_dataset(config: DictConfig, subset: str, *, views: tuple[int, int] = (1, 1),
                  on_error: str = "raise") -> VideoDataset:
    """The train, val or test dataset that ``config`` describes. val and test are the same held-out split.

    Args:
        config: the experiment config; ``data.*`` says which dataset and where.
        subset: "train", "val" or "test".
        views: (clips, crops) per video for testing; (1, 1) gives one centre view.
        on_error: what a video that cannot be decoded does at test time: "raise" or "skip".

    ``data.keep_classes`` keeps only the videos of those classes (labels renumbered in the dataset's class
    order) and ``data.train_videos_per_class`` the first N train videos of each class (see
    ``VideoDataset.subset``). A config problem (a missing root, list or annotation folder, an unknown class)
    is a ``DataError`` naming the key.
    """
    dataset = _whole_dataset(config, subset, views, on_error)
    data = config.data
    per_class = data.train_videos_per_class if subset == "train" else None
    if data.keep_classes is None and per_class is None:
        return dataset
    keep = None if data.keep_classes is None else list(data.keep_classes)
    unknown = [name for name in keep or [] if name not in dataset.classes]
    if unknown:
        raise DataError(f"data.keep_classes: {unknown[0]!r} is not a class of this dataset (classes: "
                        f"{', '.join(dataset.classes)})")
    try:
        return dataset.subset(keep, per_class)
    except ValueError as error:   # no videos left (a split flip pair is a ConfigError when the config loads)
        raise DataError(f"the {subset} split with data.keep_classes={keep} and data.train_videos_per_class="
                        f"{per_class}: {error}") from None


def _whole_dataset(config: DictConfig, subset: str, views: tuple[int, int], on_error: str) -> VideoDataset:
    """``build_dataset`` before ``data.keep_classes`` and ``data.train_videos_per_class``."""
    data = config.data
    train = subset == "train"
    common = dict(clip=clip_config(config, views), on_error=on_error)
    try:
        if data.dataset == "synthmotion":
            videos, annotations = synthmotion_paths(Path(data.root))
            return UCF101(videos, annotations, fold=1, subset="train" if train else "test", backend=data.backend,
                          **common)
        if data.dataset in ("ucf101", "hmdb51"):
            kind = UCF101 if data.dataset == "ucf101" else HMDB51
            return kind(data.root, _required(config, "annotations"), fold=data.fold,
                        subset="train" if train else "test", backend=data.backend, **common)
        if data.dataset == "kinetics":
            csv = _required(config, "train_list" if train else "val_list")
            return Kinetics(data.root, csv, subset="train" if train else "val", classes=data.classes,
                            backend=data.backend, **common)
        if data.dataset == "list":
            list_file = _required(config, "train_list" if train else "val_list")
            classes = read_class_list(data.classes) if data.classes else None
            return VideoList(list_file, data.root, subset="train" if train else "val", classes=classes,
                             backend=data.backend, **common)
        return VideoFolder(Path(data.root) / ("train" if train else "val"), subset="train" if train else "val",
                           backend=data.backend, **common)
    except DataError:
        raise
    except (FileNotFoundError, ValueError) as error:
        raise DataError(f"{data.dataset} {subset} data: {error} (check data.root / data.annotations / "
                        f"data.train_list / data.val_list)") from None


def check_classes(train: VideoDataset, held_out: VideoDataset) -> None:
    """A ``DataError`` unless both splits have the same class names in the same order."""
    if list(train.classes) != list(held_out.classes):
        only_train = sorted(set(train.classes) - set(held_out.classes))[:5]
        only_val = sorted(set(held_out.classes) - set(train.classes))[:5]
        raise DataError(
            f"train and val class lists differ ({len(train.classes)} vs {len(held_out.classes)} classes; "
            f"only in train: {only_train}, only in val: {only_val}); give both the same data.classes file"
        )


class SeededSamples(Dataset):
    """Wraps a training dataset so that sample ``i`` in epoch ``e`` draws its randomness from seed (seed, e, i).

    Keys are ``(epoch, index)`` pairs, as ``EpochOrder`` yields them: the epoch travels with each key,
    so persistent DataLoader workers (forked once, holding their own copy of this object) see it.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        seed = (self.seed * 1_000_003 + epoch * 10_007 + index) % 2**63
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            state = random.getstate()
            random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(state)


class EpochOrder(Sampler):
    """The keys ``(epoch, index)`` of one epoch of ``sampler``, after its first ``skip`` (a resumed epoch).

    ``start(epoch, skip)`` before each epoch; one DataLoader serves every epoch, so its workers persist.
    """

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler = sampler
        self.epoch = 0
        self.skip = 0

    def start(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.sampler):
            if position >= self.skip:
                yield self.epoch, index

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


class Shard(Sampler):
    """Indices rank, rank + world, ...: every sample on exactly one rank, none repeated (for evaluation)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_sampler(dataset: Dataset, config: DictConfig, rank: int, world_size: int) -> DistributedSampler:
    """This rank's shuffled share of the training set, reshuffled per epoch from ``config.seed``."""
    # drop_last keeps the ranks in step: each rank gets the same number of batches.
    return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed,
                              drop_last=True)


class ReportingLoader(DataLoader):
    """A DataLoader that logs, in this process, the bad and partial videos its worker processes met: once
    per video for as long as it lives (a worker cannot know what its siblings logged, so workers log nothing)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.logged_videos: set = set()

    def __iter__(self):
        batches = super().__iter__()
        if self.num_workers == 0:       # read in this process: the dataset logged them already
            yield from batches
            return
        for batch in batches:
            log_failures(batch, self.logged_videos)
            yield batch


def loader(dataset: Dataset, sampler: Sampler, batch_size: int, config: DictConfig, *, train: bool) -> DataLoader:
    """Batches of ``collate_clips`` dicts with ``data.num_workers`` workers; ``train`` drops a last short batch.

    Training workers persist across epochs (stop them with ``stop_workers``): they are forked once,
    before the first step. Forked workers share every mapped page of this process, and each shared
    page the training step then writes is copied (a copy-on-write fault); so they are forked as few
    times as possible, and right after the heap's free pages are handed back
    (``release_memory_before_fork``, called before iterating).
    """
    workers = config.data.num_workers
    return ReportingLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_clips,
        pin_memory=torch.cuda.is_available(), drop_last=train, persistent_workers=train and workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )


def release_memory_before_fork(batches: DataLoader) -> None:
    """Hand the heap's free pages back to the kernel when iterating ``batches`` next forks its workers.

    Call it right before iterating: the workers then share none of the freed pages (see
    ``host.release_freed_memory``). Persistent workers that already run fork nothing: it does nothing then.
    """
    if batches.num_workers > 0 and getattr(batches, "_iterator", None) is None:
        release_freed_memory()


def stop_workers(batches: DataLoader) -> None:
    """Stop the worker processes of ``batches`` now (persistent ones included), not at garbage collection."""
    iterator = getattr(batches, "_iterator", None)       # where a persistent DataLoader keeps its iterator
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
