"""Scoring a video of any length with sliding windows, streaming: frames are decoded once, in order, and
only the frames that open windows still need are held, so memory does not grow with the video's length.

A window of ``window`` seconds starts every ``stride`` seconds. Its clip is the model's own (``clip_len``
frames ``frame_interval`` apart) centred in the window, or ``clip_len`` frames spread evenly when the
window is shorter than that span; it is transformed as a centre test view. A video shorter than one
window is scored as one window over all its frames.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from ..datasets import VideoDecodeError, read_video
from ..datasets.sampling import clip_span
from ..datasets.transforms import build_transforms
from .data import clip_config


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
    open_windows: list[dict] = []       # start, wanted indices, frames kept so far
    results: list[WindowScores] = []
    next_start, seen = 0, 0

    def score(start: int, clip_frames: torch.Tensor, end: int) -> None:
        view = transform(clip_frames)[0].unsqueeze(0).to(device)
        probs = torch.softmax(model(view).float(), dim=1)[0].cpu()
        results.append(WindowScores(start / fps, end / fps, probs))

    for index, frame in enumerate(tqdm(frames, desc=path.name, unit="frame", disable=not progress, leave=False)):
        seen = index + 1
        while next_start <= index:
            open_windows.append({"start": next_start, "wanted": window_indices(next_start, length, clip.clip_len,
                                                                               clip.frame_interval), "kept": {}})
            next_start += step
        for w in open_windows:
            if index in w["wanted"]:
                w["kept"][index] = frame
        for w in [w for w in open_windows if w["wanted"][-1] == index]:
            score(w["start"], torch.from_numpy(np.stack([w["kept"][i] for i in w["wanted"]])), w["start"] + length)
            open_windows.remove(w)
    if not seen:
        raise VideoDecodeError(path, "no frame could be decoded")
    if not results:
        # Shorter than one window: one window over every frame that decoded (a second, short read).
        decoded = read_video(path, lambda count: window_indices(0, seen, clip.clip_len, clip.frame_interval),
                             "pyav", num_frames=seen)
        score(0, decoded.frames, seen)
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
    """The probabilities of the video's ``top`` classes over time (window centres), as a PNG."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    probs = torch.stack([w.probs for w in windows])
    centres = [(w.start + w.end) / 2 for w in windows]
    shown = probs.mean(0).topk(min(top, len(classes))).indices.tolist()
    fig, ax = plt.subplots(figsize=(max(6.0, min(20.0, 0.25 * len(windows) + 4)), 3.5))
    for c in shown:
        ax.plot(centres, probs[:, c].tolist(), marker="o", markersize=3, label=classes[c])
    ax.set(xlabel="time (s, window centre)", ylabel="probability", ylim=(0, 1),
           title=f"{len(windows)} windows of {windows[0].end - windows[0].start:.1f} s")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def segments(windows: list[WindowScores], classes: list[str]) -> list[tuple[float, float, str]]:
    """Runs of windows with the same top class, as (start, end, class): the timeline's segments."""
    runs: list[tuple[float, float, str]] = []
    for w in windows:
        name = classes[int(w.probs.argmax())]
        if runs and runs[-1][2] == name:
            runs[-1] = (runs[-1][0], w.end, name)
        else:
            runs.append((w.start, w.end, name))
    return runs


__all__ = ["WindowScores", "plot_timeline", "score_windows", "segments", "video_scores", "window_indices",
           "write_windows_csv"]
