"""HMDB-51 (Kuehne et al., 2011): 51 classes, official folds 1-3."""

from __future__ import annotations

from .annotations import read_hmdb51_split
from .video_dataset import FoldDataset


class HMDB51(FoldDataset):
    """HMDB-51 from its 153 official split files ``<class>_test_split<N>.txt`` (tag 1 train, 2 test).

    ``HMDB51(root, annotations, fold=1, subset="train")``; layout ``root/<class>/<video>.avi``;
    classes sorted by name.
    """

    read_split = staticmethod(read_hmdb51_split)
    list_name = "*_test_split{fold}.txt"
