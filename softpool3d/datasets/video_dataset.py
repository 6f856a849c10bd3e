"""The dataset base class: decoding, clip sampling, transforms and the bad-video policy.

``ds[i]`` returns ``{"video", "label", "index", "path"}``. "video" is float (C, T, H, W) for
training and for a single test view, and (V, C, T, H, W) for V = num_clips x num_crops test views.

A video whose header claims more frames than decode (a cut-short download) is **used**: its clips
come from the frames that decode. The true count is learned on the first read and kept in shared
memory, so DataLoader workers and later epochs reuse it; one warning names the file and both counts
(logged as bad videos are, below), and the item carries ``"partial": (header_frames, num_frames)``.

Classes that name a horizontal direction (MoveLeft/MoveRight, clockwise/counter-clockwise) change
under a horizontal flip. With ``clip.flip_pairs`` naming them, a training clip is flipped with
probability 1/2 and a flipped clip of one class of a pair is labelled as the other, as mmaction2's
``flip_label_map`` does for Something-Something; classes in no pair keep their label.

Bad videos (cannot be opened, no video stream, no frame decodes):

- training: a video that fails to decode is recorded in ``ds.failures`` (of the process that read
  it) and in the returned item's "replaced" list (its cause under "failures"), and another random
  sample is drawn in its place; after ``max_retries`` failures in a row the item raises;
- it is logged once per run: read in this process, the dataset logs it; read in a DataLoader
  worker (another process, which cannot know what its siblings logged), it is not logged there but
  travels in the batch, and ``log_failures(batch, seen)`` logs it in the main process, as the
  engine's loaders do;
- testing never substitutes: ``on_error="raise"`` (default) raises ``VideoDecodeError``;
  ``on_error="skip"`` returns an item with "error" set and no video, which ``collate_clips``
  leaves out of the batch and lists under "skipped".

Only ``VideoDecodeError`` counts as a bad video: any other error (a transform or sampling bug) surfaces.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import Dataset, get_worker_info

from .io import VideoDecodeError, read_video
from .sampling import train_clip_indices, uniform_clip_indices
from .transforms import ClipConfig, build_transforms

logger = logging.getLogger("softpool3d.datasets")
ON_ERROR = ("raise", "skip")


class VideoDataset(Dataset):
    """Videos with labels, as clips: ``ds[i]["video"]`` is float (C, T, H, W), or (V, C, T, H, W) for V test views.

    Args:
        samples: (video path or rawframes folder, 0-based label) pairs.
        classes: the class names; ``classes[label]`` names a label.
        train: one random clip and crop per item (and another video for a bad one); else ``clip``'s
            evenly spread test views, never another video.
        clip: clip length, frame interval, sizes, flip and test views (``ClipConfig``).
        backend: the decoder (see ``io.BACKENDS``).
        on_error: at test time, "raise" for a bad video, or "skip" it (listed by ``collate_clips``).
        max_retries: in training, bad videos in a row before the item raises.
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        classes: list[str],
        *,
        train: bool,
        clip: Optional[ClipConfig] = None,
        backend: str = "auto",
        on_error: str = "raise",
        max_retries: int = 10,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if not samples:
            raise ValueError("the dataset has no samples")
        bad = [label for _, label in samples if not 0 <= label < len(classes)]
        if bad:
            raise ValueError(f"label {bad[0]} is outside the {len(classes)} classes")
        self.samples = samples
        self.classes = classes
        self.train = train
        self.clip = clip or ClipConfig()
        self.backend = backend
        self.on_error = on_error
        self.max_retries = max_retries
        self.failures: list[tuple[str, str]] = []
        self._logged: set = set()        # what this process logged: bad paths, ("partial", path)
        # Per sample: (frames that decode, header count) once a read found them to differ; 0 = not seen.
        # Shared memory, so a count learned in one DataLoader worker serves every worker and epoch.
        self._counts = torch.zeros(len(samples), 2, dtype=torch.int64).share_memory_()
        # label -> its label when flipped, when the flip is done here (training with flip_pairs).
        self._flipped_label = (flip_label_map(self.clip.flip_pairs, classes)
                               if train and self.clip.flip and self.clip.flip_pairs else None)
        clip = self.clip if self._flipped_label is None else dataclasses.replace(self.clip, flip=False)
        self._transform = build_transforms(clip, train)

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, classes: Optional[list[str]] = None, per_class: Optional[int] = None) -> "VideoDataset":
        """A dataset of this one's videos of ``classes`` only (in this dataset's class order, labels
        renumbered from 0), with at most the first ``per_class`` videos of each class (in sample order:
        deterministic, the same for every seed). None keeps every class / every video.

        A name that is not a class here is a ValueError that lists the classes; so is a subset with no videos.
        """
        names = list(self.classes) if classes is None else [c for c in self.classes if c in set(classes)]
        unknown = [c for c in (classes or []) if c not in self.classes]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a class of this dataset (classes: {', '.join(self.classes)})")
        label = {self.classes.index(name): new for new, name in enumerate(names)}
        taken = dict.fromkeys(label.values(), 0)
        samples = []
        for path, old in self.samples:
            if old in label and (per_class is None or taken[label[old]] < per_class):
                samples.append((path, label[old]))
                taken[label[old]] += 1
        if not samples:
            raise ValueError(f"no videos of {', '.join(names)} here")
        return VideoDataset(samples, names, train=self.train, clip=self.clip, backend=self.backend,
                            on_error=self.on_error, max_retries=self.max_retries)

    def load(self, index: int) -> tuple[torch.Tensor, Optional[tuple[int, int]]]:
        """The video tensor of sample ``index`` and, for a partial file, (header frames, decoded frames).

        Decoding errors propagate.
        """
        path = self.samples[index][0]
        clip = self.clip
        if self.train:
            def choose(count: int) -> list[int]:
                return train_clip_indices(count, clip.clip_len, clip.frame_interval)
        else:
            def choose(count: int) -> list[int]:
                clips = uniform_clip_indices(count, clip.clip_len, clip.frame_interval, clip.num_clips)
                return [i for c in clips for i in c]
        known, header = (int(v) for v in self._counts[index])
        decoded = read_video(path, choose, self.backend, num_frames=known or None)
        if decoded.partial and not known:
            self._counts[index, 0], self._counts[index, 1] = decoded.num_frames, decoded.header_frames
            header = decoded.header_frames
            if get_worker_info() is None:   # in a worker, the main process logs it from the batch
                _log_partial_once(path, header, decoded.num_frames, self._logged)
        partial = (header, decoded.num_frames) if known or decoded.partial else None
        if self.train:
            return self._transform(decoded.frames)[0], partial
        views = [view for frames_of_clip in decoded.frames.split(clip.clip_len)
                 for view in self._transform(frames_of_clip)]
        return (views[0] if len(views) == 1 else torch.stack(views)), partial

    def _record(self, index: int, error: Exception) -> None:
        path = self.samples[index][0]
        self.failures.append((path, str(error)))
        if get_worker_info() is None:   # in a worker, the main process logs it from the batch
            _log_once(path, str(error), self._logged)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        if not self.train:
            try:
                video, partial = self.load(index)
            except VideoDecodeError as error:
                if self.on_error == "raise":
                    raise
                self._record(index, error)
                return {"video": None, "label": label, "index": index, "path": path, "error": str(error)}
            return {"video": video, "label": label, "index": index, "path": path, "partial": partial}
        replaced: list[str] = []
        failures: list[tuple[str, str]] = []
        current = index
        for _ in range(self.max_retries + 1):
            try:
                video, partial = self.load(current)
            except VideoDecodeError as error:
                self._record(current, error)
                replaced.append(self.samples[current][0])
                failures.append((self.samples[current][0], str(error)))
                current = int(torch.randint(len(self.samples), (1,)))
                continue
            path, label = self.samples[current]
            if self._flipped_label is not None and bool(torch.rand(()) < 0.5):
                video, label = video.flip(-1), self._flipped_label.get(label, label)
            return {"video": video, "label": label, "index": current, "path": path, "replaced": replaced,
                    "failures": failures, "partial": partial}
        raise RuntimeError(
            f"{self.max_retries + 1} videos in a row could not be decoded (starting at sample {index}); "
            f"last: {self.failures[-1][0]}: {self.failures[-1][1]}"
        )


def flip_label_map(pairs, classes: list[str]) -> dict[int, int]:
    """{label: label of its flipped clips} for class-name pairs.

    A pair neither of whose classes the dataset has (a subset of a dataset's classes) is left out with a
    warning; a pair with one class missing is a ValueError naming it, since its flipped clips would
    have no label.
    """
    index = {name: i for i, name in enumerate(classes)}
    mapping: dict[int, int] = {}
    for pair in pairs:
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError(f"flip_pairs: {list(pair)} is not a pair of two different class names")
        missing = [name for name in pair if name not in index]
        if len(missing) == 2:
            logger.warning("flip_pairs: neither %s nor %s is a class of this dataset; that pair is left out", *pair)
            continue
        if missing:
            present = pair[1] if missing[0] == pair[0] else pair[0]
            raise ValueError(f"flip_pairs: {missing[0]!r} is not a class of this dataset, but {present!r} is "
                             f"(classes: {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
        a, b = index[pair[0]], index[pair[1]]
        for name, label in zip(pair, (a, b)):
            if label in mapping:
                raise ValueError(f"flip_pairs: {name!r} is in more than one pair")
        mapping[a], mapping[b] = b, a
    return mapping


def collate_clips(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a batch, leaving out skipped items, which are listed as (path, error) under "skipped".

    Partial videos (used, but shorter than their header says) are listed as
    (path, header frames, decoded frames) under "partial"; training's bad videos, replaced by others,
    as (path, cause) under "failures".
    """
    kept = [item for item in batch if item.get("video") is not None]
    out: dict[str, Any] = {"skipped": [(item["path"], item["error"]) for item in batch if item.get("video") is None]}
    out["video"] = torch.stack([item["video"] for item in kept]) if kept else torch.empty(0)
    out["label"] = torch.tensor([item["label"] for item in kept], dtype=torch.long)
    out["index"] = torch.tensor([item["index"] for item in kept], dtype=torch.long)
    out["path"] = [item["path"] for item in kept]
    out["replaced"] = [p for item in kept for p in item.get("replaced", [])]
    out["failures"] = [f for item in kept for f in item.get("failures", [])]
    out["partial"] = [(item["path"], *item["partial"]) for item in kept if item.get("partial")]
    return out


def _log_once(path: str, cause: str, seen: set) -> None:
    if path not in seen:
        seen.add(path)
        logger.warning("cannot use %s: %s", path, cause)


def _log_partial_once(path: str, header: int, decoded: int, seen: set[str]) -> None:
    if ("partial", path) not in seen:
        seen.add(("partial", path))
        logger.warning("%s: the header says %d frames but %d decode; using the %d that decode",
                       path, header, decoded, decoded)


def log_failures(batch: dict[str, Any], seen: set) -> None:
    """Log the bad and the partial videos of a batch that DataLoader workers made, each once: ``seen``
    holds what was logged so far and is updated. Call it in the main process, once per batch, with one
    set per run (a worker cannot know what its sibling workers logged)."""
    for path, cause in [*batch.get("failures", []), *batch.get("skipped", [])]:
        _log_once(path, cause, seen)
    for path, header, decoded in batch.get("partial", []):
        _log_partial_once(path, header, decoded, seen)


def resolve_videos(root: Path, relative: list[tuple[str, int]], list_file: Path) -> list[tuple[str, int]]:
    """Absolute paths under ``root``; class folders match case-insensitively. Missing files are an error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video root not found: {root}")
    folders = {p.name.lower(): p.name for p in root.iterdir() if p.is_dir()}
    samples, missing = [], []
    for rel, label in relative:
        path = root / rel
        if not path.exists() and "/" in rel:
            folder, rest = rel.split("/", 1)
            path = root / folders.get(folder.lower(), folder) / rest
        (samples if path.exists() else missing).append((str(path), label))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(relative)} videos listed in {list_file} are missing under {root}; "
            f"first: {missing[0][0]}"
        )
    return samples


class FoldDataset(VideoDataset):
    """A dataset with official folds: ``(root, annotations, fold=1, subset="train")``.

    Subclasses set ``read_split(annotations, fold, subset) -> (relative samples, classes)`` and
    ``list_name`` (the split file named when a listed video is missing; ``{fold}``/``{subset}`` filled in).
    """

    read_split = None
    list_name = ""

    def __init__(
        self,
        root,
        annotations,
        fold: int = 1,
        subset: str = "train",
        *,
        clip: Optional[ClipConfig] = None,
        backend: str = "auto",
        on_error: str = "raise",
        max_retries: int = 10,
    ) -> None:
        relative, classes = type(self).read_split(annotations, fold, subset)
        list_file = Path(annotations) / self.list_name.format(fold=fold, subset=subset)
        samples = resolve_videos(Path(root), relative, list_file)
        super().__init__(samples, classes, train=subset == "train", clip=clip, backend=backend, on_error=on_error,
                         max_retries=max_retries)
