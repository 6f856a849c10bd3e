"""Video decoding: exact frames by index from a video file or a folder of frame images.

Backends:

- ``pyav``: required; decodes sequentially, so the frame at index i is the i-th decoded frame;
- ``torchcodec``: optional (needs system FFmpeg); used by ``auto`` when importable;
- ``decord``: optional;
- ``frames``: a directory of images (``img_00001.jpg`` ..., mmaction2's rawframes layout).

Every failure to read a video raises ``VideoDecodeError`` with the path and the cause.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]
BACKENDS = ("auto", "pyav", "torchcodec", "decord", "frames")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class VideoDecodeError(RuntimeError):
    """A video (or frame folder) that cannot be read; names the path and the underlying cause."""

    def __init__(self, path: PathLike, cause: Union[str, BaseException, None] = None):
        self.path = str(path)
        self.cause = cause
        if cause is None:  # re-raised from a DataLoader worker with the whole message as its argument
            super().__init__(self.path)
            return
        reason = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else cause
        super().__init__(f"cannot decode {self.path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


# ---------------------------------------------------------------- backend discovery


@functools.cache
def _torchcodec_works() -> bool:
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401, PLC0415
    except Exception:  # noqa: BLE001 - a missing FFmpeg shows up as an import-time error
        return False
    return True


@functools.cache
def _decord_works() -> bool:
    try:
        import decord  # noqa: F401, PLC0415
    except Exception:  # noqa: BLE001
        return False
    return True


def available_backends() -> list[str]:
    """The file backends that work here, fastest first (``frames`` is for folders and always works)."""
    found = ["torchcodec"] if _torchcodec_works() else []
    found += ["decord"] if _decord_works() else []
    return found + ["pyav", "frames"]


def _resolve(path: Path, backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "frames" if path.is_dir() else available_backends()[0]
    if backend == "torchcodec" and not _torchcodec_works():
        raise ValueError("backend='torchcodec' is not available (pip install torchcodec; it needs system FFmpeg)")
    if backend == "decord" and not _decord_works():
        raise ValueError("backend='decord' is not available (pip install decord)")
    return backend


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(path, FileNotFoundError("no such file or directory"))
    if path.is_file() and path.stat().st_size == 0:
        raise VideoDecodeError(path, "the file is empty (0 bytes)")


# ---------------------------------------------------------------- frames folders


def frame_files(folder: Path) -> list[Path]:
    """Image files of a rawframes folder in frame order (numbers in the names sort numerically)."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise VideoDecodeError(folder, "the folder holds no frame images")

    def key(p: Path):
        numbers = re.findall(r"\d+", p.stem)
        return (int(numbers[-1]) if numbers else -1, p.name)

    return sorted(files, key=key)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------- PyAV


def _pyav_probe(path: Path) -> VideoInfo:
    import av  # noqa: PLC0415

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:  # some containers (webm, mkv) do not store a count: count packets
            num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        return VideoInfo(num_frames, fps, int(stream.codec_context.height), int(stream.codec_context.width))


def _pyav_read(path: Path, wanted: list[int]) -> tuple[dict[int, np.ndarray], int]:
    """The wanted frames by index, and how many frames were decoded."""
    import av  # noqa: PLC0415

    needed = set(wanted)
    last = max(needed)
    frames: dict[int, np.ndarray] = {}
    decoded = 0
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index in needed:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    return frames, decoded


# ---------------------------------------------------------------- public API


def probe(path: PathLike, backend: str = "auto") -> VideoInfo:
    """Frame count, frame rate and size of a video file or a rawframes folder."""
    path = Path(path)
    _check_exists(path)
    chosen = _resolve(path, backend)
    try:
        if chosen == "frames":
            files = frame_files(path)
            height, width = _read_image(files[0]).shape[:2]
            return VideoInfo(len(files), 0.0, height, width)
        if chosen == "torchcodec":
            from torchcodec.decoders import VideoDecoder  # noqa: PLC0415

            meta = VideoDecoder(str(path)).metadata
            return VideoInfo(int(meta.num_frames), float(meta.average_fps or 0.0), int(meta.height), int(meta.width))
        if chosen == "decord":
            import decord  # noqa: PLC0415

            reader = decord.VideoReader(str(path))
            height, width = reader[0].shape[:2]
            return VideoInfo(len(reader), float(reader.get_avg_fps()), int(height), int(width))
        return _pyav_probe(path)
    except VideoDecodeError:
        raise
    except Exception as error:  # noqa: BLE001 - every backend error becomes a VideoDecodeError
        raise VideoDecodeError(path, error) from error


def read_frames(path: PathLike, indices: Sequence[int], backend: str = "auto") -> torch.Tensor:
    """The frames at ``indices`` (any order, repeats allowed) as uint8 (T, H, W, 3), T = len(indices).

    An index past the last frame raises ``IndexError`` naming the file; anything that cannot
    be decoded raises ``VideoDecodeError``.
    """
    path = Path(path)
    wanted = [int(i) for i in indices]
    if not wanted:
        raise ValueError(f"read_frames({path}): indices is empty")
    if min(wanted) < 0:
        raise IndexError(f"{path}: negative frame index {min(wanted)}")
    _check_exists(path)
    chosen = _resolve(path, backend)
    try:
        if chosen == "frames":
            files = frame_files(path)
            if max(wanted) >= len(files):
                raise IndexError(f"{path}: frame index {max(wanted)} is past the end ({len(files)} frames)")
            frames = {i: _read_image(files[i]) for i in set(wanted)}
        elif chosen == "torchcodec":
            from torchcodec.decoders import VideoDecoder  # noqa: PLC0415

            decoder = VideoDecoder(str(path), dimension_order="NHWC")
            count = int(decoder.metadata.num_frames)
            if max(wanted) >= count:
                raise IndexError(f"{path}: frame index {max(wanted)} is past the end ({count} frames)")
            return decoder.get_frames_at(indices=wanted).data.contiguous()
        elif chosen == "decord":
            import decord  # noqa: PLC0415

            reader = decord.VideoReader(str(path))
            if max(wanted) >= len(reader):
                raise IndexError(f"{path}: frame index {max(wanted)} is past the end ({len(reader)} frames)")
            return torch.from_numpy(reader.get_batch(wanted).asnumpy()).contiguous()
        else:
            frames, decoded = _pyav_read(path, wanted)
            if decoded == 0:
                raise VideoDecodeError(path, "no frame could be decoded")
            if max(wanted) >= decoded:
                raise IndexError(f"{path}: frame index {max(wanted)} is past the end ({decoded} frames)")
    except (VideoDecodeError, IndexError):
        raise
    except Exception as error:  # noqa: BLE001
        raise VideoDecodeError(path, error) from error
    if not frames:
        raise VideoDecodeError(path, "no frame could be decoded")
    return torch.from_numpy(np.stack([frames[i] for i in wanted]))
