"""Video decoding: exact frames by index from a video file or a folder of frame images.

Backends:

- ``pyav``: required; the frame at index i is the i-th frame that decoding from the start returns.
  Where the file's timestamps allow it, a clip is decoded from the keyframe before its first frame
  instead, with every frame checked against the timestamps (the same frames, fewer decoded);
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
from typing import Callable, Iterator, Optional, Sequence, Union

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
    header_frames: int      # what the container claims (its packet count if it stores none)
    frames_decoded: int = 0  # how many frames the decoder returned for this read (PyAV; fewer after a seek)

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
#
# A read first demuxes the whole stream (no decoding: a few ms for a 10 s video) into a PacketTable.
# Where its timestamps can be trusted, frame i is the frame with the i-th smallest pts, and a clip is
# decoded from the last keyframe before its first frame; every frame decoded there is checked against
# the table, and any doubt (a seek that lands elsewhere, a frame missing, a decoding error) falls back
# to decoding from the start, which defines frame i: the i-th frame decoded.

MAX_REORDER = 16   # a decoder returns a frame at most this many packets after reading it (H.264's bound)


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


@dataclass(frozen=True)
class PacketTable:
    """Every packet of a video stream in file order, as one demuxing pass (no decoding) finds them."""

    keys: list[tuple]               # (byte position, pts, size): recognises a packet demuxed again
    pts: list[Optional[int]]
    dts: list[Optional[int]]        # often unknown after a seek (MKV), so not part of the key
    keyframes: list[bool]
    clean: bool                     # demuxed to the end; no packet flagged corrupt or to be discarded

    def presentation(self, header_frames: int) -> Optional[list[int]]:
        """The pts of frames 0, 1, 2, ... as sequential decoding returns them, or None where the
        timestamps cannot be trusted to say so: a pts missing or repeated, a header that counts other
        than the packets (a cut-short file), a first packet that is not a keyframe shown first, or
        packets further out of order than a decoder reorders (a timestamp reset)."""
        count = len(self.pts)
        if not (self.clean and count and header_frames in (0, count)):
            return None
        if any(p is None for p in self.pts) or len(set(self.pts)) != count or len(set(self.keys)) != count:
            return None
        order = sorted(self.pts)
        if not self.keyframes[0] or self.pts[0] != order[0]:
            return None
        rank = {p: i for i, p in enumerate(order)}
        if any(abs(rank[p] - i) > MAX_REORDER for i, p in enumerate(self.pts)):
            return None
        return order


class _Misplaced(Exception):
    """A seek did not land on a packet that decoding may start from."""


def _packet_key(packet) -> tuple:
    return (packet.pos, packet.pts, packet.size)


def _demux_table(container, stream) -> PacketTable:
    import av  # noqa: PLC0415

    keys, pts, dts, keyframes, clean = [], [], [], [], True
    try:
        for packet in container.demux(stream):
            if packet.size == 0:   # the empty packet that ends the stream
                continue
            keys.append(_packet_key(packet))
            pts.append(packet.pts)
            dts.append(packet.dts)
            keyframes.append(bool(packet.is_keyframe))
            clean = clean and not (packet.is_corrupt or packet.is_discard)
    except av.error.FFmpegError:
        clean = False
    return PacketTable(keys, pts, dts, keyframes, clean)


def _decoded(container, stream, landing: Optional[set] = None) -> Iterator:
    """Frames decoded from where the container stands. With ``landing`` (packet keys), the first packet
    demuxed must be one of them, else ``_Misplaced`` is raised before any frame."""
    for packet in container.demux(stream):
        if landing is not None and packet.size > 0:
            if _packet_key(packet) not in landing:
                raise _Misplaced
            landing = None
        yield from stream.decode(packet)


Decoded = tuple[dict[int, np.ndarray], int, str]


def _decode_sequentially(frames_decoded: Iterator, wanted: Sequence[int]) -> Decoded:
    """Frame i is the i-th frame decoded: the wanted frames (up to the last one), how many decoded and
    the error that stopped decoding ("" if none).

    Fewer frames than ``max(wanted) + 1`` decoded means the stream ended, or broke, there.
    """
    import av  # noqa: PLC0415

    needed = set(wanted)
    last = max(needed)
    frames: dict[int, np.ndarray] = {}
    decoded, failure = 0, ""
    try:
        for index, frame in enumerate(frames_decoded):
            decoded = index + 1
            if index in needed:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    except av.error.FFmpegError as error:
        # A damaged or cut-short stream: the frames before the damage are the video.
        failure = f"decoding stopped after frame {decoded}: {type(error).__name__}: {error}"
    return frames, decoded, failure


def _decode_from_start(container, stream, table: PacketTable, wanted: Sequence[int]) -> Decoded:
    """``_decode_sequentially`` from the first packet of a container the table was read from.

    A seek back to 0 is checked to land on the first packet: in some files (every timestamp 0) it lands
    anywhere. Then a seek to the first packet's byte position is tried, then the file is opened again.
    """
    import av  # noqa: PLC0415

    if table.keys:
        first = table.keys[0]
        seeks = [lambda: container.seek(0)]
        if first[0] is not None and first[0] >= 0:
            seeks.append(lambda: container.seek(first[0], unsupported_byte_offset=True))
        for seek in seeks:
            try:
                seek()
                return _decode_sequentially(_decoded(container, stream, {first}), wanted)
            except (_Misplaced, av.error.FFmpegError):
                continue
    with av.open(container.name) as fresh:
        fresh_stream = fresh.streams.video[0]
        fresh_stream.thread_type = stream.thread_type
        return _decode_sequentially(fresh.decode(fresh_stream), wanted)


def _decode_after_seek(container, stream, table: PacketTable, order: list[int],
                       wanted: Sequence[int]) -> Optional[tuple[dict[int, np.ndarray], int]]:
    """The wanted frames, decoded from the last keyframe before the first one, and how many frames were
    decoded; ``order[i]`` is frame i's pts.

    None when the first wanted frame is in the first keyframe's span (decode from the start), or when
    anything disagrees with the table: then nothing here is used.
    """
    import av  # noqa: PLC0415

    target = order[min(wanted)]
    # The last keyframe shown at or before the target, with no packet before it shown at or after the target.
    start, shown_before = 0, None
    for position, (pts, keyframe) in enumerate(zip(table.pts, table.keyframes)):
        if shown_before is not None and shown_before >= target:
            break
        if keyframe and pts <= target:
            start = position
        shown_before = pts if shown_before is None else max(shown_before, pts)
    if start == 0:
        return None
    # Landing on this keyframe or any before it is right; a keyframe after it would miss frames.
    landing = {key for key, keyframe in zip(table.keys[:start + 1], table.keyframes) if keyframe}
    pts, dts = table.pts[start], table.dts[start]
    # Containers index keyframes by pts (MKV) or by dts (MP4): try the first, then the earlier of the two.
    for offset in dict.fromkeys([pts, pts if dts is None else min(pts, dts)]):
        try:
            container.seek(offset, stream=stream, backward=True)
            return _check_against_table(_decoded(container, stream, landing), order, wanted)
        except _Misplaced:
            continue
        except av.error.FFmpegError:
            return None
    return None


def _check_against_table(frames_decoded: Iterator, order: list[int],
                         wanted: Sequence[int]) -> Optional[tuple[dict[int, np.ndarray], int]]:
    """The wanted frames out of frames decoded from a keyframe at or before the first, each checked to be
    the frame the table says; None at the first disagreement."""
    first, last = min(wanted), max(wanted)
    target = order[first]
    needed = set(wanted)
    frames: dict[int, np.ndarray] = {}
    index = first            # the frame the next one shown at or after the target must be
    for decoded, frame in enumerate(frames_decoded, start=1):
        if frame.pts is None:
            return None
        if index == first and frame.pts < target:
            continue      # before the clip (or a leading frame of an open GOP that cannot decode)
        if frame.pts != order[index]:
            return None
        if index in needed:
            frames[index] = frame.to_ndarray(format="rgb24")
        if index == last:
            return frames, decoded
        index += 1
    return None               # the stream ended before the last wanted frame


def _pyav_read_video(path: Path, choose: ChooseIndices, num_frames: Optional[int],
                     seek: bool = True) -> DecodedFrames:
    import av  # noqa: PLC0415

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        table = _demux_table(container, stream)
        stored = int(stream.frames or 0)
        header = stored or len(table.keys)     # some containers (webm, mkv) store no count: count packets
        count = num_frames or header
        wanted = _checked(path, choose(count), count) if count > 0 else [0]
        order = table.presentation(stored)
        if seek and order is not None and count == len(order):
            found = _decode_after_seek(container, stream, table, order, wanted)
            if found is not None:
                frames, decoded = found
                return DecodedFrames(torch.from_numpy(np.stack([frames[i] for i in wanted])), count, header, decoded)
        frames, decoded, _ = _decode_from_start(container, stream, table, wanted)
        if decoded == 0:
            raise VideoDecodeError(path, "no frame could be decoded")
        if decoded <= max(wanted):
            # The header overstates: the file holds `decoded` frames. Choose again from those.
            count = decoded
            wanted = _checked(path, choose(count), count)
            frames, decoded, _ = _decode_from_start(container, stream, table, wanted)
            if decoded <= max(wanted):
                raise VideoDecodeError(path, f"decoded {decoded} frames, then {count} on a second pass")
    return DecodedFrames(torch.from_numpy(np.stack([frames[i] for i in wanted])), count, header, decoded)


def count_decoded_frames(path: PathLike) -> tuple[int, int, str]:
    """Decode every frame of a video file the way ``read_video``'s PyAV path reads it.

    Returns (header frames, frames that decode, why decoding stopped early or ""); the header count is
    the packet count where the container stores none, as for ``read_video``. Raises ``VideoDecodeError``
    for a file without a video stream, and what ``av.open`` raises.
    """
    import av  # noqa: PLC0415

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        table = _demux_table(container, stream)
        header = int(stream.frames or 0) or len(table.keys)
        _, decoded, failure = _decode_from_start(container, stream, table, [2**62])
    return header, decoded, failure


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
               num_frames: Optional[int] = None, seek: bool = True) -> DecodedFrames:
    """Open a video once, choose frame indices from its frame count and decode them.

    Args:
        path: a video file or a rawframes folder.
        choose: frame count -> the indices to return (any order, repeats allowed), each below the count.
        backend: one of ``BACKENDS``.
        num_frames: the count an earlier read learned; used instead of the header.
        seek: PyAV decodes a clip from the keyframe before its first frame where the file's timestamps
            allow it (the same frames as decoding from the start, checked); False always decodes from
            the start (a baseline for benchmarks).

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
        return _pyav_read_video(path, choose, num_frames, seek)
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
