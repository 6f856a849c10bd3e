"""UCF-101 (Soomro et al., 2012): 101 classes, 13,320 videos, official folds 1-3."""

from __future__ import annotations

from .annotations import read_ucf101_split
from .video_dataset import FoldDataset


class UCF101(FoldDataset):
    """UCF-101 from its official split files: ``UCF101(root, annotations, fold=1, subset="train")``.

    Layout: ``root/<Class>/v_<Class>_gGG_cCC.avi`` and ``annotations/{classInd,trainlist0N,testlist0N}.txt``
    (SynthMotion writes the same layout with .mp4). ``subset="train"`` samples one random clip;
    ``"test"`` gives ``clip.num_clips x clip.num_crops`` views and never substitutes a bad video.
    """

    read_split = staticmethod(read_ucf101_split)
    list_name = "{subset}list0{fold}.txt"
