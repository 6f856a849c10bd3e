"""UCF-101 (Soomro et al., 2012): 101 classes, 13,320 videos, official folds 1-3."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .annotations import read_ucf101_split
from .transforms import ClipConfig
from .video_dataset import VideoDataset, resolve_videos


class UCF101(VideoDataset):
    """UCF-101 from its official split files.

    Layout: ``root/<Class>/v_<Class>_gGG_cCC.avi`` and ``annotations/{classInd,trainlist0N,testlist0N}.txt``
    (SynthMotion writes the same layout with .mp4). ``subset="train"`` samples one random clip;
    ``"test"`` gives ``clip.num_clips x clip.num_crops`` views and never substitutes a bad video.
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
        relative, classes = read_ucf101_split(annotations, fold, subset)
        samples = resolve_videos(Path(root), relative, Path(annotations) / f"{subset}list0{fold}.txt")
        super().__init__(samples, classes, train=subset == "train", clip=clip, backend=backend, on_error=on_error,
                         max_retries=max_retries)
