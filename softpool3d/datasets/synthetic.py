"""SynthMotion: a generated action dataset whose classes need temporal reasoning.

Every video shows the same kind of object, a bar with a random colour, length, angle and
position, over a textured background with moving distractor disks. Only how the bar moves
over time tells the class apart, so a single frame cannot:

    MoveLeft, MoveRight, MoveUp, MoveDown     constant velocity in one direction
    RotateClockwise, RotateCounterClockwise   rotation in place
    Approach, Recede                          growing or shrinking in place
    SpeedUp, SlowDown                         horizontal motion that accelerates or decelerates

The files are real mp4 videos written with PyAV in UCF-101's layout, so the main job runs
through the UCF-101 code path:

    root/videos/<Class>/v_<Class>_gGG_cCC.mp4
    root/annotations/classInd.txt, trainlist01.txt, testlist01.txt   (CRLF, 1-based, as UCF's)

Every video has its own background, so a model cannot tell the classes apart by memorising
scenes, and the split is by group (the first 30% of the groups are the test set), as in UCF-101.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Union

import numpy as np

from .io import write_video
from .parallel import map_files

CLASSES = (
    "MoveLeft", "MoveRight", "MoveUp", "MoveDown",
    "RotateClockwise", "RotateCounterClockwise",
    "Approach", "Recede",
    "SpeedUp", "SlowDown",
)
# The classes a horizontal flip turns into each other; every other class is its own mirror image (a flipped
# SpeedUp clip still speeds up, a flipped MoveUp clip still moves up).
MIRROR_PAIRS = (("MoveLeft", "MoveRight"), ("RotateClockwise", "RotateCounterClockwise"))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour texture with fine grain: (size, size, 3) float in [0, 255]."""
    coarse = rng.uniform(70, 180, size=(6, 6, 3))
    grid = np.linspace(0, 5, size)
    i0 = np.floor(grid).astype(int).clip(0, 4)
    t = (grid - i0)[:, None]
    rows = coarse[i0] * (1 - t[..., None]) + coarse[i0 + 1] * t[..., None]          # (size, 6, 3)
    smooth = rows[:, i0] * (1 - t.T[..., None]) + rows[:, i0 + 1] * t.T[..., None]   # (size, size, 3)
    return smooth + rng.normal(0, 8, size=(size, size, 3))


def _bar_mask(size: int, cx: float, cy: float, length: float, width: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage (size, size) of a bar centred at (cx, cy) rotated by angle (radians)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = xs - cx, ys - cy
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    du = np.clip(length / 2 - np.abs(u) + 0.5, 0, 1)
    dv = np.clip(width / 2 - np.abs(v) + 0.5, 0, 1)
    return du * dv


def _disk_mask(size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    return np.clip(radius - np.hypot(xs - cx, ys - cy) + 0.5, 0, 1)


def _trajectory(label: str, rng: np.random.Generator, frames: int, size: int):
    """Per-frame (cx, cy, length scale, angle) of the bar for one class."""
    t = np.arange(frames, dtype=np.float64)
    angle0 = rng.uniform(0, math.pi)
    cx, cy = (np.full(frames, c) for c in rng.uniform(0.3, 0.7, size=2) * size)
    scale = np.ones(frames)
    angle = np.full(frames, angle0)
    travel = rng.uniform(0.35, 0.5) * size                      # total displacement of the moving classes
    if label.startswith("Move"):
        dx, dy = {"MoveLeft": (-1, 0), "MoveRight": (1, 0), "MoveUp": (0, -1), "MoveDown": (0, 1)}[label]
        offset = (t / (frames - 1) - 0.5) * travel              # -travel/2 .. +travel/2
        centre = size / 2 + rng.uniform(-0.15, 0.15, size=2) * size
        cx, cy = centre[0] + dx * offset, centre[1] + dy * offset
    elif label.startswith("Rotate"):
        speed = rng.uniform(0.12, 0.3) * (1 if label == "RotateClockwise" else -1)   # image y points down
        angle = angle0 + speed * t
    elif label in ("Approach", "Recede"):
        growth = np.linspace(0.6, 1.6, frames)
        scale = growth if label == "Approach" else growth[::-1]
    else:  # SpeedUp / SlowDown: horizontal, either way, position quadratic in time
        sign = rng.choice([-1.0, 1.0])
        u = t / (frames - 1)
        progress = u**2 if label == "SpeedUp" else 1 - (1 - u) ** 2
        cx = size / 2 + sign * (progress - 0.5) * travel
    return cx, cy, scale, angle


def render_video(label: str, rng: np.random.Generator, background: np.ndarray, frames: int) -> np.ndarray:
    """One clip of class ``label``: uint8 (frames, size, size, 3)."""
    size = background.shape[0]
    # A bar much darker or much brighter than the mid-grey background, so it stands out.
    colour = rng.uniform(0, 30, size=3) if rng.random() < 0.5 else rng.uniform(225, 255, size=3)
    length = rng.uniform(0.25, 0.4) * size
    width = max(2.0, rng.uniform(0.06, 0.1) * size)
    cx, cy, scale, angle = _trajectory(label, rng, frames, size)
    n_distractors = int(rng.integers(2, 4))
    d_pos = rng.uniform(0, size, size=(n_distractors, 2))
    d_vel = rng.normal(0, 1.5, size=(n_distractors, 2))
    d_col = rng.uniform(0, 255, size=(n_distractors, 3))
    d_rad = rng.uniform(0.04, 0.08, size=n_distractors) * size
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        frame = background.copy()
        for k in range(n_distractors):
            pos = d_pos[k] + d_vel[k] * f
            mask = _disk_mask(size, pos[0] % size, pos[1] % size, d_rad[k])[..., None]
            frame = frame * (1 - mask) + d_col[k] * mask
        mask = _bar_mask(size, cx[f], cy[f], length * scale[f], width * math.sqrt(scale[f]), angle[f])[..., None]
        frame = frame * (1 - mask) + colour * mask
        frame += rng.normal(0, 3, size=frame.shape)
        video[f] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


def _write_clip(job: tuple) -> None:
    """Render and write one video; ``job`` is (path, label, label index, video index, seed, size, frames, fps)."""
    path, label, label_index, v, seed, size, frames, fps = job
    rng = np.random.default_rng([seed, 2, label_index, v])
    background = _background(np.random.default_rng([seed, 1, label_index, v]), size)
    write_video(path, render_video(label, rng, background, frames), fps)


def make_synthmotion(
    root: Union[str, Path],
    num_classes: int = 10,
    videos_per_class: int = 30,
    frames: int = 16,
    size: int = 64,
    seed: int = 0,
    groups: int = 10,
    fps: int = 10,
    workers: int = 1,
    progress: bool = False,
) -> Path:
    """Write SynthMotion under ``root`` in UCF-101's layout and return ``root``.

    ``videos_per_class`` clips per class are spread over ``groups`` groups (gGG) as clips cCC;
    the first 30% of the groups (at least one) form ``testlist01.txt``. Each video's frames depend only
    on (seed, class, video), so the rendered frames are the same for any number of ``workers`` processes.
    """
    if not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be between 2 and {len(CLASSES)}, got {num_classes}")
    if videos_per_class < groups:
        raise ValueError(f"videos_per_class ({videos_per_class}) must be at least groups ({groups})")
    if groups < 2:
        raise ValueError(f"groups must be >= 2 so that train and test both get videos, got {groups}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16 (yuv420p), got {size}")
    if frames < 4:
        raise ValueError(f"frames must be >= 4, got {frames}")
    root = Path(root)
    classes = CLASSES[:num_classes]
    test_groups = max(1, round(0.3 * groups))
    train_lines, test_lines, jobs = [], [], []
    for label_index, label in enumerate(classes):
        for v in range(videos_per_class):
            group, clip = v % groups, v // groups
            name = f"{label}/v_{label}_g{group + 1:02d}_c{clip + 1:02d}.mp4"
            jobs.append((root / "videos" / name, label, label_index, v, seed, size, frames, fps))
            if group < test_groups:
                test_lines.append(name)
            else:
                train_lines.append(f"{name} {label_index + 1}")
    map_files(_write_clip, jobs, workers=workers, progress=progress, desc="SynthMotion")
    annotations = root / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    write = lambda name, lines: (annotations / name).write_bytes(("\r\n".join(lines) + "\r\n").encode())  # noqa: E731
    write("classInd.txt", [f"{i + 1} {label}" for i, label in enumerate(classes)])
    write("trainlist01.txt", train_lines)
    write("testlist01.txt", test_lines)
    return root
