"""Re-encode a dataset tree so that every video's short side is N pixels (mmaction2 and SlowFast use 256).

Decoding full-size videos dominates loading time; a dataset resized once to short side 256 decodes
several times faster, and the random crops are taken from the same field of view. The layout, file
names and extensions stay, so the official split lists still work. Each output keeps the frame count
(every frame that decodes) and the frame rate, is written under a temporary name, decoded again to
check its frame count and size, and only then renamed into place. An output that exists, is newer
than its source and has the right size is up to date and skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from .io import VIDEO_EXTENSIONS
from .parallel import map_files

# The encoder for each container; H.264 where the container takes it.
CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".avi": "mpeg4", ".webm": "libvpx"}


@dataclass(frozen=True)
class Resized:
    """What happened to one video: status is resized, skipped (up to date) or failed (with the reason)."""

    source: str
    output: str
    status: str
    reason: str = ""
    frames: int = 0
    width: int = 0
    height: int = 0


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``short_side`` and the aspect ratio kept, both even (yuv420p)."""
    scale = short_side / min(width, height)
    even = lambda v: max(2, int(round(v / 2)) * 2)  # noqa: E731
    return even(width * scale), even(height * scale)


def _size_of(path: Path) -> tuple[int, int]:
    import av  # noqa: PLC0415

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


def up_to_date(source: Path, output: Path, short_side: int) -> bool:
    """True when ``output`` exists, is at least as new as ``source`` and its short side is ``short_side``."""
    if not output.is_file() or output.stat().st_mtime < source.stat().st_mtime:
        return False
    try:
        width, height = _size_of(output)
    except Exception:  # noqa: BLE001 - an unreadable output is redone
        return False
    return min(width, height) == max(2, round(short_side / 2) * 2)


def _decoded_frames(path: Path) -> tuple[int, int, int]:
    import av  # noqa: PLC0415

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, stream.codec_context.width, stream.codec_context.height


def resize_video(source: Path, output: Path, short_side: int) -> Resized:
    """Re-encode ``source`` to ``output`` with the short side ``short_side``; every frame, the same rate."""
    import av  # noqa: PLC0415

    source, output = Path(source), Path(output)
    codec = CODECS.get(output.suffix.lower())
    if codec is None:
        return Resized(str(source), str(output), "failed", f"no encoder for {output.suffix}")
    temporary = output.with_name(f".{output.stem}.partial{output.suffix}")
    output.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with av.open(str(source)) as reader:
            if not reader.streams.video:
                return Resized(str(source), str(output), "failed", "no video stream")
            stream = reader.streams.video[0]
            rate = Fraction(stream.average_rate or stream.guessed_rate or 25).limit_denominator(1001)
            width, height = scaled_size(stream.codec_context.width, stream.codec_context.height, short_side)
            with av.open(str(temporary), mode="w") as writer:
                encoder = writer.add_stream(codec, rate=rate)
                encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
                if codec == "libx264":
                    encoder.options = {"crf": "18", "preset": "veryfast"}
                else:
                    encoder.bit_rate = 8_000_000
                try:
                    for frame in reader.decode(stream):
                        small = frame.reformat(width=width, height=height, format="yuv420p")
                        small.pts, small.time_base = written, Fraction(1) / rate    # one tick per frame
                        for packet in encoder.encode(small):
                            writer.mux(packet)
                        written += 1
                except av.error.FFmpegError:
                    pass          # a cut-short source: its frames that decode are the video
                for packet in encoder.encode():
                    writer.mux(packet)
        if written == 0:
            raise ValueError("no frame decodes")
        count, out_width, out_height = _decoded_frames(temporary)
        if (count, out_width, out_height) != (written, width, height):
            raise ValueError(f"the output decodes {count} frames at {out_width}x{out_height}, "
                             f"expected {written} at {width}x{height}")
        os.replace(temporary, output)
    except Exception as error:  # noqa: BLE001 - one unreadable video is reported, not fatal
        temporary.unlink(missing_ok=True)
        return Resized(str(source), str(output), "failed", f"{type(error).__name__}: {error}")
    return Resized(str(source), str(output), "resized", "", written, width, height)


def _one(job: tuple[Path, Path, int]) -> Resized:
    source, output, short_side = job
    if up_to_date(source, output, short_side):
        return Resized(str(source), str(output), "skipped", "up to date")
    return resize_video(source, output, short_side)


def resize_tree(source_root: Path, output_root: Path, short_side: int = 256, workers: int = 1,
                progress: bool = True) -> list[Resized]:
    """Resize every video below ``source_root`` into the same relative path below ``output_root``.

    Args:
        source_root: the dataset's video folder.
        output_root: where the resized tree goes (not inside ``source_root``).
        short_side: the short side of every output, in pixels.
        workers: processes encoding in parallel.
        progress: show a tqdm bar.

    A source folder without videos is a ``FileNotFoundError`` naming it; an output inside the source, a
    ``ValueError``.
    """
    source_root, output_root = Path(source_root).resolve(), Path(output_root).resolve()
    if output_root == source_root or source_root in output_root.parents:
        raise ValueError(f"the output folder {output_root} must not be inside the source {source_root}")
    sources = sorted(p for p in source_root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not sources:
        raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {source_root}")
    jobs = [(p, output_root / p.relative_to(source_root), short_side) for p in sources]
    return map_files(_one, jobs, workers, progress, "resizing")


def summary(results: Sequence[Resized], seconds: float) -> str:
    """Counts per status, the throughput, and one line per failed video."""
    counts = {s: sum(r.status == s for r in results) for s in ("resized", "skipped", "failed")}
    done = counts["resized"]
    lines = [f"resized {done}, skipped {counts['skipped']} (up to date), failed {counts['failed']} in {seconds:.1f} s"
             f" ({done / max(seconds, 1e-9):.2f} videos/s)"]
    lines += [f"failed: {r.source}: {r.reason}" for r in results if r.status == "failed"]
    return "\n".join(lines)

