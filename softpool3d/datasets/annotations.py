"""Parsers for the datasets' own annotation files. Each returns relative paths with 0-based labels.

Every malformed or inconsistent line raises ``AnnotationError`` naming the file and line.

UCF-101: ``classInd.txt``, ``trainlist0N.txt`` and ``testlist0N.txt``.
The files use CRLF line endings and 1-based class numbers. Train lines read
``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``; test lines have no label, which comes
from the class folder instead. classInd.txt defines the class order. Class folders match
class names case-insensitively: the official trainlist02.txt spells ``HandstandPushups``
where classInd.txt has ``HandStandPushups``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

PathLike = Union[str, os.PathLike]
FOLDS = (1, 2, 3)
SUBSETS = ("train", "test")
HMDB51_TAGS = {"train": "1", "test": "2"}  # 0 marks a video that the split leaves out


class AnnotationError(ValueError):
    """A malformed or inconsistent annotation line; the message names the file and line number."""

    def __init__(self, path: PathLike, line_number: int, problem: str):
        super().__init__(f"{path}:{line_number}: {problem}")


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines with their 1-based numbers, CRLF or LF."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_class_index(path: PathLike) -> list[str]:
    """Class names in label order from ``classInd.txt`` (lines ``1 ApplyEyeMakeup``)."""
    path = Path(path)
    classes: list[str] = []
    for number, line in _lines(path):
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise AnnotationError(path, number, f"expected '<index> <ClassName>', got {line!r}")
        if int(fields[0]) != len(classes) + 1:
            raise AnnotationError(path, number, f"expected class number {len(classes) + 1}, got {fields[0]}")
        if fields[1] in classes:
            raise AnnotationError(path, number, f"class {fields[1]!r} is listed twice")
        classes.append(fields[1])
    if not classes:
        raise AnnotationError(path, 0, "no classes")
    return classes


def read_ucf101_split(annotations: PathLike, fold: int = 1, subset: str = "train") -> tuple[list[tuple[str, int]], list[str]]:
    """Relative video paths with 0-based labels for one fold and subset, and the class names.

    Args:
        annotations: the folder of UCF-101's official files (classInd.txt, trainlist0N.txt, testlist0N.txt).
        fold: 1, 2 or 3.
        subset: "train" or "test"; test lines carry no label, so it comes from the class folder.

    Returns ``([("Class/v_Class_gGG_cCC.avi", label), ...], class names)``; a malformed line is an
    ``AnnotationError`` naming the file and line.
    """
    if fold not in FOLDS:
        raise ValueError(f"fold must be one of {FOLDS}, got {fold!r}")
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    annotations = Path(annotations)
    classes = read_class_index(annotations / "classInd.txt")
    index = {name.lower(): i for i, name in enumerate(classes)}
    path = annotations / f"{subset}list0{fold}.txt"
    samples: list[tuple[str, int]] = []
    for number, line in _lines(path):
        fields = line.split()
        if subset == "train" and (len(fields) != 2 or not fields[1].isdigit()):
            raise AnnotationError(path, number, f"expected '<Class>/<video> <label>', got {line!r}")
        if subset == "test" and len(fields) != 1:
            raise AnnotationError(path, number, f"expected '<Class>/<video>', got {line!r}")
        relative = fields[0]
        folder = relative.split("/")[0] if "/" in relative else None
        if folder is None:
            raise AnnotationError(path, number, f"expected a path '<Class>/<video>', got {relative!r}")
        if folder.lower() not in index:
            raise AnnotationError(path, number, f"unknown class folder {folder!r} (not in classInd.txt)")
        label = index[folder.lower()]
        if subset == "train":
            given = int(fields[1]) - 1
            if not 0 <= given < len(classes):
                raise AnnotationError(path, number, f"label {fields[1]} is out of range 1..{len(classes)}")
            if given != label:
                raise AnnotationError(path, number, f"label {fields[1]} is {classes[given]!r} but the folder is "
                                                    f"{folder!r}")
        samples.append((relative, label))
    if not samples:
        raise AnnotationError(path, 0, "no videos listed")
    return samples, classes


def read_hmdb51_split(annotations: PathLike, fold: int = 1, subset: str = "train") -> tuple[list[tuple[str, int]], list[str]]:
    """HMDB-51's official split files ``<class>_test_split<N>.txt`` (51 classes x 3 folds).

    Lines read ``April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1`` with tag 1 = train, 2 = test,
    0 = unused. Classes are sorted by name; paths are ``<class>/<file>``.

    Args:
        annotations: the folder holding the 153 split files.
        fold: 1, 2 or 3.
        subset: "train" (tag 1) or "test" (tag 2).
    """
    if fold not in FOLDS:
        raise ValueError(f"fold must be one of {FOLDS}, got {fold!r}")
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    annotations = Path(annotations)
    if not annotations.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {annotations}")
    suffix = "_test_split"
    split_files = sorted(annotations.glob(f"*{suffix}[123].txt"))
    classes = sorted({f.name[: f.name.rindex(suffix)] for f in split_files})
    if not classes:
        raise FileNotFoundError(f"no '<class>{suffix}<N>.txt' files in {annotations}")
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        path = annotations / f"{name}{suffix}{fold}.txt"
        for number, line in _lines(path):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise AnnotationError(path, number, f"expected '<video> <0|1|2>', got {line!r}")
            if fields[1] == HMDB51_TAGS[subset]:
                samples.append((f"{name}/{fields[0]}", label))
    if not samples:
        raise AnnotationError(annotations, 0, f"no {subset} videos in fold {fold}")
    return samples, classes


def read_video_list(list_file: PathLike) -> list[tuple[str, int]]:
    """An mmaction2/SlowFast/pytorchvideo video list: lines ``path label`` (0-based integer labels).

    Everything before the last field is the path, so paths may contain spaces.
    """
    list_file = Path(list_file)
    samples: list[tuple[str, int]] = []
    for number, line in _lines(list_file):
        fields = line.rsplit(maxsplit=1)
        if len(fields) != 2 or not fields[1].isdigit():
            raise AnnotationError(list_file, number, f"expected '<path> <label>', got {line!r}")
        samples.append((fields[0], int(fields[1])))
    if not samples:
        raise AnnotationError(list_file, 0, "no videos listed")
    return samples


def read_rawframe_list(list_file: PathLike) -> list[tuple[str, int, int]]:
    """mmaction2's rawframes list: lines ``frame_dir num_frames label``; returns (dir, num_frames, label)."""
    list_file = Path(list_file)
    samples: list[tuple[str, int, int]] = []
    for number, line in _lines(list_file):
        fields = line.rsplit(maxsplit=2)
        if len(fields) != 3 or not (fields[1].isdigit() and fields[2].isdigit()) or int(fields[1]) < 1:
            raise AnnotationError(list_file, number, f"expected '<frame_dir> <num_frames >= 1> <label>', got {line!r}")
        samples.append((fields[0], int(fields[1]), int(fields[2])))
    if not samples:
        raise AnnotationError(list_file, 0, "no frame folders listed")
    return samples


KINETICS_SPLITS = {"train": "train", "val": "val", "validate": "val", "test": "test"}


def read_kinetics_csv(path: PathLike, subset: str) -> list[tuple[str, str, int, int]]:
    """Rows (label, youtube_id, time_start, time_end) of one subset from an official Kinetics CSV.

    Kinetics-400/600 columns: ``label,youtube_id,time_start,time_end,split,is_cc``; Kinetics-700-2020
    drops ``is_cc``. Labels may be quoted; the split ``validate`` counts as ``val``.
    """
    import csv  # noqa: PLC0415

    if subset not in ("train", "val", "test"):
        raise ValueError(f"subset must be one of ('train', 'val', 'test'), got {subset!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    rows: list[tuple[str, str, int, int]] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        required = ["label", "youtube_id", "time_start", "time_end", "split"]
        if header is None or any(name not in header for name in required):
            raise AnnotationError(path, 1, f"expected a header with {required}, got {header}")
        col = {name: header.index(name) for name in required}
        for number, fields in enumerate(reader, start=2):
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) < len(header):
                raise AnnotationError(path, number, f"expected {len(header)} fields, got {len(fields)}: {fields}")
            split = KINETICS_SPLITS.get(fields[col["split"]].strip())
            if split is None:
                raise AnnotationError(path, number, f"unknown split {fields[col['split']]!r}")
            if split != subset:
                continue
            try:
                start, end = int(float(fields[col["time_start"]])), int(float(fields[col["time_end"]]))
            except ValueError:
                raise AnnotationError(path, number, f"time_start/time_end must be numbers, got {fields}") from None
            rows.append((fields[col["label"]].strip(), fields[col["youtube_id"]].strip(), start, end))
    return rows
