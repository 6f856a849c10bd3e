"""Find the videos a decoder chokes on: decode every frame of every file and classify it.

- ``ok``: every frame the header promises decodes;
- ``partial``: the file opens but decodes fewer frames than its header says, or fails halfway
  (a cut-short download); training and testing use the frames that decode;
- ``bad``: it cannot be opened, has no video stream, or yields no frame at all.

``clean_split_files`` writes a dataset's split files without the bad videos, in the dataset's own
format (UCF-101 and HMDB-51 split lists, Kinetics CSVs, ``path label`` lists), so training can use them.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .io import IMAGE_SUFFIXES, VIDEO_EXTENSIONS, count_decoded_frames, frame_files
from .parallel import map_files

STATUSES = ("ok", "partial", "bad")


@dataclass(frozen=True)
class VideoCheck:
    """One file's verdict; ``header_frames`` is the packet count where the container stores no count."""

    path: str
    status: str            # ok | partial | bad
    reason: str
    header_frames: int
    decoded_frames: int
    size_bytes: int
    fps: float


def _check_frames_folder(path: Path) -> VideoCheck:
    from PIL import Image  # noqa: PLC0415

    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    try:
        files = frame_files(path)
    except Exception as error:  # noqa: BLE001 - a folder without frames is a bad video
        return VideoCheck(str(path), "bad", str(error), 0, 0, size, 0.0)
    decoded = 0
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
        except Exception as error:  # noqa: BLE001
            return VideoCheck(str(path), "partial" if decoded else "bad", f"{file.name}: {error}", len(files),
                              decoded, size, 0.0)
        decoded += 1
    return VideoCheck(str(path), "ok", "", len(files), decoded, size, 0.0)


def check_video(path) -> VideoCheck:
    """Decode every frame of one video file (or rawframes folder) as the loader reads it, and classify it."""
    import av  # noqa: PLC0415

    path = Path(path)
    if path.is_dir():
        return _check_frames_folder(path)
    if not path.exists():
        return VideoCheck(str(path), "bad", "no such file", 0, 0, 0, 0.0)
    size = path.stat().st_size
    try:
        container = av.open(str(path))
    except Exception as error:  # noqa: BLE001 - whatever stops the file opening makes it bad
        return VideoCheck(str(path), "bad", f"cannot open: {type(error).__name__}: {error}", 0, 0, size, 0.0)
    with container:
        if not container.streams.video:
            return VideoCheck(str(path), "bad", "no video stream", 0, 0, size, 0.0)
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
    # Decoded as the loader reads it (its header count, its way back to the first frame, its threads):
    # a file whose timestamps mislead a seek is judged by the frames the loader gets.
    try:
        header, decoded, failure = count_decoded_frames(path)
    except Exception as error:  # noqa: BLE001 - whatever stops the file opening makes it bad
        return VideoCheck(str(path), "bad", f"cannot open: {type(error).__name__}: {error}", 0, 0, size, fps)
    if decoded == 0:
        return VideoCheck(str(path), "bad", failure or "no frame decodes", header, 0, size, fps)
    if failure or decoded < header:
        reason = failure or f"the header says {header} frames, {decoded} decode"
        return VideoCheck(str(path), "partial", reason, header, decoded, size, fps)
    return VideoCheck(str(path), "ok", "", header, decoded, size, fps)


def check_videos(paths: Sequence, workers: int = 1, progress: bool = True) -> list[VideoCheck]:
    """``check_video`` for every path, in ``workers`` processes, in the order given."""
    return map_files(check_video, [str(p) for p in paths], workers, progress, "checking")


def videos_under(folder: Path) -> list[Path]:
    """Every video file (and rawframes folder of images) below ``folder``, sorted."""
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        if files and not subdirs and all(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
            found.append(Path(directory))
            continue
        found += [Path(directory) / f for f in sorted(files) if Path(f).suffix.lower() in VIDEO_EXTENSIONS]
    return sorted(found)


def write_csv(results: Iterable[VideoCheck], path: Path) -> None:
    rows = [asdict(r) for r in results]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(VideoCheck.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(rows)


def summary(results: Sequence[VideoCheck]) -> str:
    """A markdown table of the counts, then one line per partial or bad file with its reason."""
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    lines = ["| status | videos |", "|---|---:|", *[f"| {s} | {counts[s]} |" for s in STATUSES],
             f"| all | {len(results)} |"]
    for r in results:
        if r.status != "ok":
            lines.append(f"{r.status}: {r.path}: {r.reason}")
    return "\n".join(lines)


def _names_a_bad_video(line: str, bad_names: set[str], bad_keys: set[str]) -> bool:
    text = line.replace("\\", "/")
    tokens = {Path(t.strip().strip('"')).name for t in text.replace(",", " ").split()}
    if tokens & bad_names:
        return True
    # Kinetics CSV rows name the video by youtube_id and times, not by file name.
    fields = [f.strip().strip('"') for f in text.split(",")]
    if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
        return f"{fields[1]}_{int(fields[2]):06d}_{int(fields[3]):06d}" in bad_keys
    return False


def clean_split_files(split_files: Sequence[Path], bad: Sequence[str], out: Path,
                      extra_files: Sequence[Path] = ()) -> dict[str, int]:
    """Copy ``split_files`` to ``out`` without the lines that name a bad video; returns lines dropped per file.

    A line names a video by its file name (UCF-101, HMDB-51 and ``path label`` lists) or, in a Kinetics
    CSV, by youtube_id and times. Line endings and every other line are kept byte for byte;
    ``extra_files`` (classInd.txt, a class list) are copied unchanged, so ``out`` replaces the original folder.
    """
    bad_names = {Path(p).name for p in bad}
    bad_keys = {Path(p).stem for p in bad}
    out.mkdir(parents=True, exist_ok=True)
    dropped = {}
    for split_file in split_files:
        kept, removed = [], 0
        for line in split_file.read_bytes().splitlines(keepends=True):
            if _names_a_bad_video(line.decode("utf-8", errors="replace"), bad_names, bad_keys):
                removed += 1
            else:
                kept.append(line)
        (out / split_file.name).write_bytes(b"".join(kept))
        dropped[split_file.name] = removed
    for extra in extra_files:
        if Path(extra).resolve() != (out / Path(extra).name).resolve():
            shutil.copyfile(extra, out / Path(extra).name)
    return dropped


def dataset_split_files(config) -> tuple[list[Path], list[Path]]:
    """The split files a config's dataset reads, and the files that belong beside them (class lists).

    Args:
        config: an experiment config (``data.dataset`` and its paths).
    """
    data = config.data
    if data.dataset in ("ucf101", "synthmotion"):
        folder = Path(data.root) / "annotations" if data.dataset == "synthmotion" else Path(data.annotations)
        fold = 1 if data.dataset == "synthmotion" else data.fold
        return [folder / f"trainlist0{fold}.txt", folder / f"testlist0{fold}.txt"], [folder / "classInd.txt"]
    if data.dataset == "hmdb51":
        return sorted(Path(data.annotations).glob(f"*_test_split{data.fold}.txt")), []
    if data.dataset in ("kinetics", "list"):
        lists = [Path(p) for p in (data.train_list, data.val_list) if p]
        return list(dict.fromkeys(lists)), [Path(data.classes)] if data.classes else []
    return [], []     # folder datasets have no split files

