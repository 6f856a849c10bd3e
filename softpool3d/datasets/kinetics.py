"""Kinetics-400/600/700 from the official CSVs, with the videos users actually have.

Files are ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` (mp4, mkv, webm or avi) in any of
``root/<label>/``, ``root/<subset>/<label>/`` or flat in ``root/`` (or ``root/<subset>/``).
Construction lists those folders once and never opens a video, so a 240k-row CSV builds in
seconds. Listed videos that are not on disk (common for Kinetics) are left out, counted in
``.missing`` and reported in one warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

from .annotations import AnnotationError, read_kinetics_csv
from .io import VIDEO_EXTENSIONS
from .transforms import ClipConfig
from .video_dataset import VideoDataset


def index_videos(root: Path, subset: str) -> dict[str, str]:
    """Video file stem -> path, for files in root, root/<subset> and one level of class folders below them."""
    found: dict[str, str] = {}
    tops = [root, root / subset]
    for top in tops:
        if not top.is_dir():
            continue
        with os.scandir(top) as entries:
            folders = []
            for entry in entries:
                if entry.is_dir():
                    if entry.path != str(root / subset):
                        folders.append(entry.path)
                elif entry.name.lower().endswith(VIDEO_EXTENSIONS):
                    found.setdefault(os.path.splitext(entry.name)[0], entry.path)
        for folder in folders:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.lower().endswith(VIDEO_EXTENSIONS):
                        found.setdefault(os.path.splitext(entry.name)[0], entry.path)
    return found


def read_class_list(classes: Union[Sequence[str], str, Path]) -> list[str]:
    """A class list given directly or as a file with one class name per line."""
    if isinstance(classes, (str, Path)):
        names = [line.strip() for line in Path(classes).read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        names = list(classes)
    if len(set(names)) != len(names):
        raise ValueError("the class list has duplicate names")
    return names


class Kinetics(VideoDataset):
    """Kinetics from an official CSV. ``classes`` (a list or a file) pins the class order, so train and val agree."""

    def __init__(
        self,
        root: Union[str, Path],
        annotations: Union[str, Path],
        subset: str = "train",
        classes: Union[Sequence[str], str, Path, None] = None,
        *,
        clip: Optional[ClipConfig] = None,
        backend: str = "auto",
        on_error: str = "raise",
        max_retries: int = 10,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"video root not found: {root}")
        rows = read_kinetics_csv(annotations, subset)
        if not rows:
            raise AnnotationError(annotations, 0, f"no rows for subset {subset!r}")
        names = read_class_list(classes) if classes is not None else sorted({label for label, *_ in rows})
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted({label for label, *_ in rows} - set(index))
        if unknown:
            raise ValueError(f"{annotations}: {len(unknown)} labels are not in the class list, e.g. {unknown[:3]}")
        files = index_videos(root, subset)
        samples, self.missing = [], []
        for label, youtube_id, start, end in rows:
            stem = f"{youtube_id}_{start:06d}_{end:06d}"
            if stem in files:
                samples.append((files[stem], index[label]))
            else:
                self.missing.append(stem)
        if self.missing:
            warnings.warn(f"Kinetics {subset}: {len(self.missing)} of {len(rows)} videos listed in {annotations} "
                          f"are not under {root}; they are left out (see .missing)", stacklevel=2)
        if not samples:
            raise FileNotFoundError(f"none of the {len(rows)} {subset} videos listed in {annotations} is under {root}")
        super().__init__(samples, names, train=subset == "train", clip=clip, backend=backend, on_error=on_error,
                         max_retries=max_retries)
