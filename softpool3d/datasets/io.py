"""Video decoding: exact frames by index from a video file or a folder of frame images.

Backends:

- ``pyav``: required; decodes sequentially, so the frame at index i is the i-th decoded frame;
- ``torchcodec``: optional (needs system FFmpeg); used by ``auto`` when importable;
- ``decord``: optional;
- ``frames``: a directory of images (``img_00001.jpg`` ..., mmaction2's rawframes layout).

``read_video`` opens a file once, picks the frame indices from its frame count and decodes
them. A file whose header claims more frames than decode (a cut-short download, some AVI/MP4
writers) is not an error: its clips come from the frames that decode, and the result says
how many that is. A video is bad, and raises ``VideoDecodeError`` with the path and the
cause, only when it cannot be opened, has no video stream or yields no frame at all.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]
BACKENDS = ("auto", "pyav", "torchcodec", "decord", "frames")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")   # what dataset folders and the demo treat as video
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


@dataclass(frozen=True)
class DecodedFrames:
    """What ``read_video`` returns: the chosen frames and the counts they were chosen from."""

    frames: torch.Tensor    # uint8 (T, H, W, 3)
    num_frames: int         # the frames that really decode; the indices were chosen from these
    header_frames: int      # what the container claims (its packet count if it stores none; 0 if not read)

    @property
    def partial(self) -> bool:
        """True when the file decodes fewer frames than its header says."""
        return self.header_frames > self.num_frames


ChooseIndices = Callable[[int], Sequence[int]]


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


def _pyav_decode(container, stream, wanted: Sequence[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode from the start up to the last wanted frame; the wanted frames and how many decoded.

    Fewer frames than ``max(wanted) + 1`` decoded means the stream ended, or broke, there.
    """
    import av  # noqa: PLC0415

    needed = set(wanted)
    last = max(needed)
    frames: dict[int, np.ndarray] = {}
    decoded = 0
    try:
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index in needed:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    except av.error.FFmpegError:
        pass  # a damaged or cut-short stream: the frames before the damage are the video
    return frames, decoded


def _pyav_read_video(path: Path, choose: ChooseIndices, num_frames: Optional[int]) -> DecodedFrames:
    import av  # noqa: PLC0415

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        header = int(stream.frames or 0)
        if not num_frames and header <= 0:  # some containers (webm, mkv) store no count: count packets
            header = sum(1 for packet in container.demux(stream) if packet.size > 0)
            container.seek(0)
        count = num_frames or header
        wanted = _checked(path, choose(count), count) if count > 0 else [0]
        frames, decoded = _pyav_decode(container, stream, wanted)
        if decoded == 0:
            raise VideoDecodeError(path, "no frame could be decoded")
        if decoded <= max(wanted):
            # The header overstates: the file holds `decoded` frames. Choose again from those.
            count = decoded
            wanted = _checked(path, choose(count), count)
            container.seek(0)
            frames, decoded = _pyav_decode(container, stream, wanted)
            if decoded <= max(wanted):
                raise VideoDecodeError(path, f"decoded {decoded} frames, then {count} on a second pass")
    return DecodedFrames(torch.from_numpy(np.stack([frames[i] for i in wanted])), count, header)


def _checked(path: Path, indices: Sequence[int], count: int) -> list[int]:
    wanted = [int(i) for i in indices]
    if not wanted:
        raise ValueError(f"{path}: no frame index was chosen")
    if min(wanted) < 0:
        raise IndexError(f"{path}: negative frame index {min(wanted)}")
    if max(wanted) >= count:
        raise IndexError(f"{path}: frame index {max(wanted)} is past the end ({count} frames decode)")
    return wanted


# ---------------------------------------------------------------- public API


def probe(path: PathLike, backend: str = "auto") -> VideoInfo:
    """Frame count, frame rate and size of a video file or a rawframes folder, as the header says.

    The count is the container's claim (a packet count where it stores none); a cut-short file
    decodes fewer frames, which ``read_video`` finds out.
    """
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


def read_video(path: PathLike, choose: ChooseIndices, backend: str = "auto",
               num_frames: Optional[int] = None) -> DecodedFrames:
    """Open a video once, choose frame indices from its frame count and decode them.

    Args:
        path: a video file or a rawframes folder.
        choose: frame count -> the indices to return (any order, repeats allowed), each below the count.
        backend: one of ``BACKENDS``.
        num_frames: the count an earlier read learned; skips the header (and a packet count).

    Returns ``DecodedFrames`` with frames uint8 (T, H, W, 3), T = len(indices). When fewer frames decode
    than the header says, ``choose`` is called again with the count that decodes. Raises
    ``VideoDecodeError`` for a bad video and ``IndexError`` when ``choose`` returns an index past its count.
    """
    import av  # noqa: PLC0415

    path = Path(path)
    _check_exists(path)
    chosen = _resolve(path, backend)
    try:
        if chosen == "frames":
            files = frame_files(path)
            wanted = _checked(path, choose(len(files)), len(files))
            images = {i: _read_image(files[i]) for i in set(wanted)}
            return DecodedFrames(torch.from_numpy(np.stack([images[i] for i in wanted])), len(files), len(files))
        if chosen in ("torchcodec", "decord"):
            decoded = _indexed_read_video(path, choose, chosen, num_frames)
            if decoded is not None:
                return decoded
        return _pyav_read_video(path, choose, num_frames)
    except (av.error.FFmpegError, OSError) as error:
        # Decoder and file errors make a bad video; any other error (in `choose`, say) is a bug and surfaces.
        raise VideoDecodeError(path, error) from error


def _indexed_read_video(path: Path, choose: ChooseIndices, backend: str,
                        num_frames: Optional[int]) -> Optional[DecodedFrames]:
    """torchcodec or decord: random access by index. None when the decoder fails on the file (a header
    that overstates, a damaged stream): then PyAV's sequential pass reads it."""
    try:
        if backend == "torchcodec":
            from torchcodec.decoders import VideoDecoder  # noqa: PLC0415

            reader = VideoDecoder(str(path), dimension_order="NHWC")
            header = int(reader.metadata.num_frames)
        else:
            import decord  # noqa: PLC0415

            reader = decord.VideoReader(str(path))
            header = len(reader)
    except Exception:  # noqa: BLE001
        return None
    count = num_frames or header
    wanted = _checked(path, choose(count), count)
    try:
        if backend == "torchcodec":
            frames = reader.get_frames_at(indices=wanted).data.contiguous()
        else:
            frames = torch.from_numpy(reader.get_batch(wanted).asnumpy()).contiguous()
    except Exception:  # noqa: BLE001
        return None
    return DecodedFrames(frames, count, header)


def read_frames(path: PathLike, indices: Sequence[int], backend: str = "auto") -> torch.Tensor:
    """The frames at ``indices`` (any order, repeats allowed) as uint8 (T, H, W, 3), T = len(indices).

    An index past the last frame that decodes raises ``IndexError`` naming the file; anything that
    cannot be decoded raises ``VideoDecodeError``.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError(f"read_frames({path}): indices is empty")
    return read_video(path, lambda count: indices, backend).frames


# ---------------------------------------------------------------- writing


def write_video(path: Union[str, Path], video: np.ndarray, fps: int = 10, codec: str = "libx264",
                options: Optional[dict[str, str]] = None) -> None:
    """Write uint8 (T, H, W, 3) frames as a video file with PyAV (even H and W for yuv420p).

    ``options`` go to the muxer, e.g. ``{"movflags": "faststart"}`` puts an MP4's index first.
    With libx264 the same frames give the same bytes (with one FFmpeg build): x264's macroblock-tree
    rate control, which made some files differ from one encoding to the next, is off.
    """
    import av  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0"}
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
