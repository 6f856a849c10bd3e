"""Which frames make a clip: one random clip for training, evenly spread clips for testing.

A clip is ``clip_len`` frames ``frame_interval`` apart, spanning (clip_len - 1) * frame_interval + 1
frames. A video shorter than that span **loops**: frame indices wrap around to the start, so a
clip always holds clip_len distinct time steps of the video's motion rather than a frozen last frame.
"""

from __future__ import annotations

from typing import Optional

import torch


def clip_span(clip_len: int, frame_interval: int) -> int:
    """How many consecutive frames a clip covers: (clip_len - 1) * frame_interval + 1."""
    if clip_len < 1 or frame_interval < 1:
        raise ValueError(f"clip_len and frame_interval must be >= 1, got {clip_len} and {frame_interval}")
    return (clip_len - 1) * frame_interval + 1


def _clip_at(start: int, num_frames: int, clip_len: int, frame_interval: int) -> list[int]:
    return [(start + i * frame_interval) % num_frames for i in range(clip_len)]


def train_clip_indices(
    num_frames: int, clip_len: int, frame_interval: int = 1, generator: Optional[torch.Generator] = None
) -> list[int]:
    """Frame indices of one clip starting at a uniformly random frame (looping when the video is short).

    Args:
        num_frames: the frames the video has (that decode).
        clip_len: frames per clip.
        frame_interval: the step between a clip's frames.
        generator: the RNG to draw the start from (default: torch's global one).

    Returns ``clip_len`` indices in [0, num_frames).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    span = clip_span(clip_len, frame_interval)
    last_start = num_frames - span if num_frames >= span else num_frames - 1
    start = int(torch.randint(0, last_start + 1, (1,), generator=generator))
    return _clip_at(start, num_frames, clip_len, frame_interval)


def uniform_clip_indices(num_frames: int, clip_len: int, frame_interval: int = 1, num_clips: int = 1) -> list[list[int]]:
    """``num_clips`` clips whose centres are spread evenly over the video (deterministic).

    Clip k starts at floor((num_frames - span) * (k + 0.5) / num_clips); with num_clips=1 that is the
    middle clip. A video shorter than the span gives looped clips starting at evenly spread frames.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    span = clip_span(clip_len, frame_interval)
    room = num_frames - span if num_frames >= span else num_frames
    starts = [int(room * (k + 0.5) / num_clips) for k in range(num_clips)]
    return [_clip_at(start, num_frames, clip_len, frame_interval) for start in starts]
