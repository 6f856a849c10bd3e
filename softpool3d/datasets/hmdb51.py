"""HMDB-51 (Kuehne et al., 2011): 51 classes, official folds 1-3."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .annotations import read_hmdb51_split
from .transforms import ClipConfig
from .video_dataset import VideoDataset, resolve_videos


class HMDB51(VideoDataset):
    """HMDB-51 from its 153 official split files ``<class>_test_split<N>.txt`` (tag 1 train, 2 test).

    Layout: ``root/<class>/<video>.avi``; classes sorted by name.
    """

    def __init__(
        self,
        root: Union[str, Path],
        annotations: Union[str, Path],
        fold: int = 1,
        subset: str = "train",
        *,
        clip: Optional[ClipConfig] = None,
        backend: str = "auto",
        on_error: str = "raise",
        max_retries: int = 10,
    ) -> None:
        relative, classes = read_hmdb51_split(annotations, fold, subset)
        samples = resolve_videos(Path(root), relative, Path(annotations) / f"*_test_split{fold}.txt")
        super().__init__(samples, classes, train=subset == "train", clip=clip, backend=backend, on_error=on_error,
                         max_retries=max_retries)
