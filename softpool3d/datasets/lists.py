"""Generic datasets: an mmaction2-style list file, or a folder of class folders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from .annotations import read_rawframe_list, read_video_list
from .io import VIDEO_EXTENSIONS
from .transforms import ClipConfig
from .video_dataset import VideoDataset

SUBSETS = ("train", "val", "test")


def _check_subset(subset: str) -> None:
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")


class VideoList(VideoDataset):
    """Lines ``path label`` (mmaction2, SlowFast, pytorchvideo); with ``frames=True``, mmaction2's rawframes
    lines ``frame_dir num_frames label``. Paths are relative to ``root`` when given."""

    def __init__(
        self,
        list_file: Union[str, Path],
        root: Union[str, Path, None] = None,
        subset: str = "train",
        *,
        frames: bool = False,
        classes: Optional[Sequence[str]] = None,
        clip: Optional[ClipConfig] = None,
        on_error: str = "raise",
        max_retries: int = 10,
        backend: str = "auto",
    ) -> None:
        _check_subset(subset)
        rows = [(p, label) for p, _, label in read_rawframe_list(list_file)] if frames else read_video_list(list_file)
        base = Path(root) if root is not None else None
        samples = [(str(base / p if base else Path(p)), label) for p, label in rows]
        missing = [p for p, _ in samples if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(samples)} entries of {list_file} do not exist; "
                                    f"first: {missing[0]}")
        names = list(classes) if classes is not None else [str(i) for i in range(max(l for _, l in samples) + 1)]
        super().__init__(samples, names, train=subset == "train", clip=clip, on_error=on_error,
                         max_retries=max_retries, backend="frames" if frames else backend)


class VideoFolder(VideoDataset):
    """``root/<class>/<video>``: classes are the sorted folder names."""

    def __init__(
        self,
        root: Union[str, Path],
        subset: str = "train",
        *,
        clip: Optional[ClipConfig] = None,
        on_error: str = "raise",
        max_retries: int = 10,
        backend: str = "auto",
    ) -> None:
        _check_subset(subset)
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"video root not found: {root}")
        names = sorted(p.name for p in root.iterdir() if p.is_dir())
        samples = [(str(f), label) for label, name in enumerate(names)
                   for f in sorted((root / name).iterdir()) if f.suffix.lower() in VIDEO_EXTENSIONS]
        if not samples:
            raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in the class folders of {root}")
        super().__init__(samples, names, train=subset == "train", clip=clip, on_error=on_error,
                         max_retries=max_retries, backend=backend)
