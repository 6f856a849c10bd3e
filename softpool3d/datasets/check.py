"""Find the videos a decoder chokes on: decode every frame of every file and classify it.

- ``ok``: every frame the header promises decodes;
- ``partial``: the file opens but decodes fewer frames than its header says, or fails halfway
  (a cut-short download); training and testing use the frames that decode;
- ``bad``: it cannot be opened, has no video stream, or yields no frame at all.

``clean_split_files`` writes a dataset's split files without the bad videos, in the dataset's own
format (UCF-101 and HMDB-51 split lists, Kinetics CSVs, ``path label`` lists), so training can use them;
``write_folder_lists`` writes a folder dataset's videos, less the bad ones, as ``path label`` lists.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import asdict, dataclass, field
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


@dataclass(frozen=True)
class SplitFiles:
    """The split files a dataset reads and how their lines name its videos.

    ``kind`` is the format: "ucf101" (UCF-101 and SynthMotion: ``Class/video.avi [label]``), "hmdb51"
    (``video.avi tag`` in ``<class>_test_split<N>.txt``), "kinetics" (CSV rows naming youtube_id and times)
    or "list" (``path label``). Listed paths are relative to ``root``.
    """

    kind: str
    root: Path
    files: list[Path]
    extra_files: list[Path] = field(default_factory=list)   # classInd.txt or a class list: copied unchanged


def _resolve(root: Path, relative: str, class_folders: dict[str, str]) -> Path:
    """``root / relative`` as the UCF-101 and HMDB-51 loaders find it: class folders match case-insensitively."""
    path = root / relative
    if not path.exists() and "/" in relative:
        folder, rest = relative.split("/", 1)
        path = root / class_folders.get(folder.lower(), folder) / rest
    return path


def _kinetics_key(fields: list[str], header: list[str]) -> str | None:
    """``<youtube_id>_<start:06d>_<end:06d>``, the file stem a Kinetics row names; None for a row that names none."""
    try:
        youtube_id, start, end = (fields[header.index(column)].strip()
                                  for column in ("youtube_id", "time_start", "time_end"))
        return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}"
    except (ValueError, IndexError):
        return None


def _listed_videos(splits: SplitFiles, split_file: Path, lines: list[str]) -> list[Path | str | None]:
    """What each line of ``split_file`` names, the way the dataset's loader reads it: a path (a Kinetics row: a
    file stem), or None for a line that names no video (a blank line, a header)."""
    root = Path(splits.root)
    folders = {p.name.lower(): p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    named: list[Path | str | None] = []
    header = None
    for line in lines:
        text = line.strip().lstrip("\ufeff")
        if not text:
            named.append(None)
        elif splits.kind == "kinetics":
            fields = next(csv.reader([text]))
            if header is None:
                header = [f.strip() for f in fields]
                named.append(None)
            else:
                named.append(_kinetics_key(fields, header))
        elif splits.kind == "ucf101":
            named.append(_resolve(root, text.split()[0], folders))
        elif splits.kind == "hmdb51":
            class_name = split_file.name[: split_file.name.rfind("_test_split")]
            named.append(_resolve(root, f"{class_name}/{text.split()[0]}", folders))
        else:                                     # a 'path label' list: the path may contain spaces
            named.append(root / text.rsplit(maxsplit=1)[0])
    return named


def clean_split_files(splits: SplitFiles, bad: Sequence[str], out: Path) -> dict[str, int]:
    """Copy the split files to ``out`` without the lines that name a bad video; returns lines dropped per file.

    A line names a video by its path as the loader resolves it (``root`` joined with the listed path; the
    HMDB-51 class from the split file's name), so ``Walk/001.avi`` being bad leaves ``Run/001.avi`` listed.
    A Kinetics row names its video by youtube_id and times, which the loader finds anywhere under ``root``.
    Line endings and every other line are kept byte for byte; the extra files (classInd.txt, a class list)
    are copied unchanged, so ``out`` replaces the original folder.
    """
    bad_paths = {Path(p) for p in bad}
    bad_stems = {Path(p).stem for p in bad}
    out.mkdir(parents=True, exist_ok=True)
    dropped = {}
    for split_file in splits.files:
        lines = split_file.read_bytes().splitlines(keepends=True)
        named = _listed_videos(splits, split_file, [line.decode("utf-8", errors="replace") for line in lines])
        kept = [line for line, video in zip(lines, named)
                if not (video in bad_stems if splits.kind == "kinetics" else video in bad_paths)]
        (out / split_file.name).write_bytes(b"".join(kept))
        dropped[split_file.name] = len(lines) - len(kept)
    for extra in splits.extra_files:
        if Path(extra).resolve() != (out / Path(extra).name).resolve():
            shutil.copyfile(extra, out / Path(extra).name)
    return dropped


def write_folder_lists(splits: dict[str, Sequence[tuple[str, int]]], classes: Sequence[str], root: Path,
                       bad: Sequence[str], out: Path) -> list[Path]:
    """A folder dataset's clean lists: ``<split>.txt`` with lines ``path label`` (paths relative to ``root``)
    for each split's samples that are not bad, and ``classes.txt``; what ``data.dataset=list`` reads.

    Args:
        splits: split name ("train", "val") -> the dataset's (path, label) samples.
        classes: the class names in label order.
        root: what the written paths are relative to (``data.root``).
        bad: the paths of the bad videos.
        out: the folder to write to.
    Returns the files written: one list per split, then the class list.
    """
    bad_paths = {Path(p) for p in bad}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, samples in splits.items():
        lines = [f"{Path(path).relative_to(root).as_posix()} {label}\n" for path, label in samples
                 if Path(path) not in bad_paths]
        (out / f"{name}.txt").write_text("".join(lines), encoding="utf-8")
        written.append(out / f"{name}.txt")
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
    return [*written, out / "classes.txt"]


def dataset_split_files(config) -> SplitFiles | None:
    """The split files a config's dataset reads, and the files that belong beside them (class lists);
    None for a folder dataset, which has none.

    Args:
        config: an experiment config (``data.dataset`` and its paths).
    """
    data = config.data
    if data.dataset == "synthmotion":
        root = Path(data.root)
        annotations = root / "annotations"
        return SplitFiles("ucf101", root / "videos", [annotations / "trainlist01.txt", annotations / "testlist01.txt"],
                          [annotations / "classInd.txt"])
    if data.dataset == "ucf101":
        folder = Path(data.annotations)
        return SplitFiles("ucf101", Path(data.root), [folder / f"trainlist0{data.fold}.txt",
                                                      folder / f"testlist0{data.fold}.txt"], [folder / "classInd.txt"])
    if data.dataset == "hmdb51":
        split_files = sorted(Path(data.annotations).glob(f"*_test_split{data.fold}.txt"))
        return SplitFiles("hmdb51", Path(data.root), split_files)
    if data.dataset in ("kinetics", "list"):
        lists = [Path(p) for p in (data.train_list, data.val_list) if p]
        return SplitFiles(data.dataset, Path(data.root), list(dict.fromkeys(lists)),
                          [Path(data.classes)] if data.classes else [])
    return None     # folder datasets have no split files
