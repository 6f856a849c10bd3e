"""Helpers shared by the tests: pooling oracles, videos whose frames carry their own index, tiny configs."""

import itertools
import math
from pathlib import Path

import numpy as np
import torch

from softpool3d.ops import reference
from softpool3d.ops._geometry import adaptive_windows, pool_windows

def as_tuple(value, dims):
    """An int or a sequence as a tuple of ``dims`` entries."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def windows_for(x, dims, kernel_size, stride=None, padding=0, ceil_mode=False):
    k = as_tuple(kernel_size, dims)
    s = k if stride is None else as_tuple(stride, dims)
    return pool_windows(x.shape[-dims:], k, s, as_tuple(padding, dims), ceil_mode)


def reference_pool(x, dims, kernel_size, stride=None, padding=0, ceil_mode=False):
    """The PyTorch reference in float64 on the same values."""
    return reference.forward(x.double(), windows_for(x, dims, kernel_size, stride, padding, ceil_mode))


def reference_adaptive(x, dims, output_size):
    sizes = as_tuple(output_size, dims)
    return reference.forward(x.double(), adaptive_windows(x.shape[-dims:], sizes))


def naive_soft_pool(x: torch.Tensor, windows) -> torch.Tensor:
    """Plain-Python loops over every window, in float64: an oracle independent of the reference."""
    x64 = x.double()
    out_sizes = [len(a.starts) for a in windows]
    y = torch.empty(tuple(x.shape[:2]) + tuple(out_sizes), dtype=torch.float64)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for o in itertools.product(*[range(s) for s in out_sizes]):
            ranges = [range(a.starts[i], a.ends[i]) for a, i in zip(windows, o)]
            values = [float(x64[(n, c) + idx]) for idx in itertools.product(*ranges)]
            if any(math.isnan(v) for v in values):
                y[(n, c) + o] = math.nan
                continue
            m = max(values)
            if math.isinf(m):
                y[(n, c) + o] = m
                continue
            weights = [math.exp(v - m) for v in values]
            total = sum(weights)
            y[(n, c) + o] = sum(w * v for w, v in zip(weights, values) if w > 0) / total
    return y


# ---------------------------------------------------------------- videos

BITS = 6


def numbered_frames(num_frames: int, height: int = 48, width: int = 64, noise: bool = False) -> np.ndarray:
    """Frame i shows i in binary as BITS black/white 16x16 blocks (robust to lossy coding).

    ``noise`` adds fresh grain to every frame, so that each frame costs bytes as real footage does.
    """
    video = np.full((num_frames, height, width, 3), 30, dtype=np.uint8)
    if noise:
        video += np.random.default_rng(0).integers(0, 30, video.shape, dtype=np.uint8)
    for i in range(num_frames):
        for bit in range(BITS):
            if (i >> bit) & 1:
                row, col = divmod(bit, 4)
                video[i, row * 16:(row + 1) * 16, col * 16:(col + 1) * 16] += 195
    return video


def frame_numbers(frames: torch.Tensor) -> list[int]:
    """The index drawn into each (H, W, 3) frame by ``numbered_frames``."""
    numbers = []
    for frame in frames.numpy():
        value = 0
        for bit in range(BITS):
            row, col = divmod(bit, 4)
            if frame[row * 16 + 4:(row + 1) * 16 - 4, col * 16 + 4:(col + 1) * 16 - 4].mean() > 128:
                value |= 1 << bit
        numbers.append(value)
    return numbers


def cut_short(source: Path, target: Path, packet: int) -> Path:
    """Keep the bytes before the video's ``packet``-th packet, as an interrupted download does.

    The header stays whole, so it still claims every frame.
    """
    import av

    with av.open(str(source)) as container:
        positions = [p.pos for p in container.demux(container.streams.video[0]) if p.size > 0]
    target.write_bytes(source.read_bytes()[: positions[packet]])
    return target


def decoded_numbers(path: Path) -> list[int]:
    """The number drawn in every frame PyAV decodes before the stream ends or breaks: the truth for a
    cut file (its length is the frame count; after a cut, B-frames can leave gaps in the numbers)."""
    import av

    frames = []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(container.streams.video[0]):
                frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
        except av.error.FFmpegError:
            pass
    return frame_numbers(torch.stack(frames)) if frames else []


def frames_that_decode(path: Path) -> int:
    """How many frames PyAV decodes before the stream ends or breaks."""
    import av

    count = 0
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(container.streams.video[0]):
                count += 1
        except av.error.FFmpegError:
            pass
    return count


ROOT = Path(__file__).resolve().parents[1]
# The studies' recipe (the main job) and its shrink to the synth6 fixture: 1 epoch of 4-frame 32x32 clips,
# batch 4 (its 1x1 test views stay).
RECIPE = str(ROOT / "configs" / "synthmotion.yaml")
SHRINK = ["data.clip_len=4", "data.frame_interval=1", "data.short_side=32", "data.crop_size=32",
          "data.num_workers=0", "train.batch_size=4", "train.epochs=1", "test.batch_size=4", "data.generate=false"]


def tiny(synth: Path, out: Path, *extra: str):
    """The main job's config shrunk to the ``synth`` fixture's SynthMotion: 2 epochs of 3 steps, 32x32 clips."""
    from softpool3d.engine import load_config

    overrides = [
        f"data.root={synth}", f"output_dir={out}", "name=tiny", "model.name=r3d_10", "data.clip_len=4",
        "data.frame_interval=1", "data.short_side=32", "data.crop_size=32", "data.num_workers=0",
        "train.batch_size=4", "train.epochs=2", "train.progress=false", "test.batch_size=4", "test.views=2x1",
        "optim.lr=0.05", "train.val_every=1", *extra,
    ]
    return load_config(ROOT / "configs" / "synthmotion.yaml", overrides)


def torchrun(script: str, *args: str, cwd: Path, timeout: int = 600):
    """``torchrun --standalone --nproc_per_node 2 script args`` on the CPU: ``script`` is a path, a name under
    tools/ (``train.py``), or a ``softpool3d`` subcommand (``train``: ``torchrun -m softpool3d train``)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOFTPOOL3D_BACKEND", "TRITON"))}
    env["OMP_NUM_THREADS"] = "1"
    if script.endswith(".py"):
        target = [str(Path(script) if Path(script).is_absolute() else ROOT / "tools" / script)]
    else:
        target = ["-m", "softpool3d", script]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               *target, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
