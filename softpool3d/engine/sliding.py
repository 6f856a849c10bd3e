"""Scoring a video of any length with sliding windows, streaming: frames are decoded once, in order, each
is transformed once (resize, centre crop, normalise: all per frame, so a clip of transformed frames is
the transformed clip), and only the last window's worth of them is held, so memory does not grow with
the video's length.

A window of ``window`` seconds starts every ``stride`` seconds while it fits in the video; when the
last of those ends before the video does, one more window is aligned to the video's end, so every
frame is scored and no window runs past the end. Its clip is the model's own (``clip_len`` frames
``frame_interval`` apart) centred in the window, or ``clip_len`` frames spread evenly when the window is
shorter than that span; it is transformed as a centre test view. A video shorter than one window is
scored as one window over all its frames. Times are frame index / frame rate.
"""

from __future__ import annotations

import csv
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from ..datasets import VideoDecodeError
from ..datasets.sampling import clip_span
from ..datasets.transforms import build_transforms
from .data import clip_config


PENDING_FRAMES = 8      # decoded frames transformed together (fewer calls; few full-size frames held)


@dataclass(frozen=True)
class WindowScores:
    """One window: its time span in seconds and the class probabilities (num_classes,)."""

    start: float
    end: float
    probs: torch.Tensor


def window_indices(start: int, length: int, clip_len: int, frame_interval: int) -> list[int]:
    """The frame indices the clip of a window of ``length`` frames starting at ``start`` uses."""
    span = clip_span(clip_len, frame_interval)
    if length >= span:
        first = start + (length - span) // 2
        return [first + j * frame_interval for j in range(clip_len)]
    return [start + min(length - 1, int((j + 0.5) * length / clip_len)) for j in range(clip_len)]


def _frames(path: Path) -> tuple[float, Iterator]:
    import av  # noqa: PLC0415

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise VideoDecodeError(path, error) from error
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate or stream.guessed_rate or 0.0)

    def frames():
        with container:
            try:
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
            except av.error.FFmpegError:
                return          # a cut-short file: its frames that decode are the video

    return fps, frames()


@torch.no_grad()
def score_windows(model: nn.Module, config: DictConfig, path: Union[str, Path], window: float,
                  stride: float, progress: bool = False) -> list[WindowScores]:
    """Class probabilities for every window of ``window`` seconds, every ``stride`` seconds, streaming.

    Windows start at 0, stride, 2 x stride, ... while they end inside the video, then one more ends
    at the video's end if the last of those does not; they come in order of their start.

    Args:
        model: the trained network, in eval mode, on the CPU or the device its parameters are on.
        config: the run's config: ``data.clip_len``, ``data.frame_interval`` and the test transform.
        path: a video file.
        window: the window length in seconds.
        stride: the step between window starts in seconds.
        progress: a tqdm bar over the decoded frames.
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be > 0 seconds, got {window} and {stride}")
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(path, FileNotFoundError("no such file"))
    fps, frames = _frames(path)
    if fps <= 0:
        raise VideoDecodeError(path, "the stream states no frame rate, so seconds cannot be turned into frames")
    clip = clip_config(config)
    transform = build_transforms(clip, train=False)
    device = next(model.parameters()).device
    length, step = max(1, round(window * fps)), max(1, round(stride * fps))
    recent: deque[torch.Tensor] = deque(maxlen=length)      # the last `length` frames, each (C, 1, crop, crop)
    pending: list[np.ndarray] = []                          # decoded frames not transformed yet (a few)
    results: list[WindowScores] = []
    seen = 0

    def flush() -> None:
        """Transform the pending frames in one call and move them to ``recent``."""
        if pending:
            recent.extend(transform(torch.from_numpy(np.stack(pending)))[0].split(1, dim=1))
            pending.clear()

    def score(start: int, count: int) -> None:
        """Score the window of ``count`` frames from ``start``; its frames are all in ``recent``."""
        flush()
        first = seen - len(recent)                           # the frame index of recent[0]
        picks = window_indices(start, count, clip.clip_len, clip.frame_interval)
        view = torch.cat([recent[i - first] for i in picks], dim=1).unsqueeze(0).to(device)
        probs = torch.softmax(model(view).float(), dim=1)[0].cpu()
        results.append(WindowScores(start / fps, (start + count) / fps, probs))

    for frame in tqdm(frames, desc=path.name, unit="frame", disable=not progress, leave=False):
        pending.append(frame)
        seen += 1
        if len(pending) == PENDING_FRAMES:
            flush()
        start = seen - length                                # the window that ends with this frame
        if start >= 0 and start % step == 0:
            score(start, length)
    if not seen:
        raise VideoDecodeError(path, "no frame could be decoded")
    if seen < length:
        score(0, seen)                                       # shorter than one window: one window over it all
    elif (seen - length) % step:
        score(seen - length, length)                         # the tail: a last window aligned to the end
    return results


def video_scores(windows: list[WindowScores]) -> torch.Tensor:
    """The video-level probabilities: the mean over windows (num_classes,)."""
    return torch.stack([w.probs for w in windows]).mean(0)


def write_windows_csv(windows: list[WindowScores], classes: list[str], path: Path, top: int = 5) -> None:
    """start, end, then the ``top`` classes and their scores, per window."""
    k = min(top, len(classes))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["start", "end", *[f"top{j + 1}" for j in range(k)], *[f"score{j + 1}" for j in range(k)]])
        for w in windows:
            p, i = w.probs.topk(k)
            writer.writerow([f"{w.start:.2f}", f"{w.end:.2f}", *[classes[c] for c in i.tolist()],
                             *[f"{v:.4f}" for v in p.tolist()]])


def plot_timeline(windows: list[WindowScores], classes: list[str], path: Path, top: int = 5) -> None:
    """The probabilities of the video's ``top`` classes over time (window centres), as a PNG.

    It draws on its own ``Figure`` with an Agg canvas: pyplot and the global backend are left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    probs = torch.stack([w.probs for w in windows])
    centres = [(w.start + w.end) / 2 for w in windows]
    shown = probs.mean(0).topk(min(top, len(classes))).indices.tolist()
    fig = Figure(figsize=(max(6.0, min(20.0, 0.25 * len(windows) + 4)), 3.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for c in shown:
        ax.plot(centres, probs[:, c].tolist(), marker="o", markersize=3, label=classes[c])
    ax.set(xlabel="time (s, window centre)", ylabel="probability", ylim=(0, 1),
           title=f"{len(windows)} windows of {windows[0].end - windows[0].start:.1f} s")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def segments(windows: list[WindowScores], classes: list[str]) -> list[tuple[float, float, str]]:
    """The timeline's segments: runs of the same top class, as (start, end, class), that do not overlap.

    Each moment goes to the window whose centre is nearest: windows (in order of their start) split the
    time between them at the midpoints of their centres, the first from its start and the last to its
    end. The segments therefore tile [first start, last end] exactly.
    """
    centres = [(w.start + w.end) / 2 for w in windows]
    bounds = [windows[0].start, *[(a + b) / 2 for a, b in zip(centres, centres[1:])], windows[-1].end]
    runs: list[tuple[float, float, str]] = []
    for k, w in enumerate(windows):
        name = classes[int(w.probs.argmax())]
        if runs and runs[-1][2] == name:
            runs[-1] = (runs[-1][0], bounds[k + 1], name)
        else:
            runs.append((bounds[k], bounds[k + 1], name))
    return runs


__all__ = ["WindowScores", "plot_timeline", "score_windows", "segments", "video_scores", "window_indices",
           "write_windows_csv"]
