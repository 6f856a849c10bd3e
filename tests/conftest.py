import itertools
import math
import os
import random
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter, which must be chosen before
# Triton is first imported (its own tl.* helpers are jit functions too).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from softpool3d.ops import reference
from softpool3d.ops._geometry import adaptive_windows, pool_windows


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """A tiny SynthMotion: 3 classes x 7 videos of 8 frames at 32x32; 12 train videos, 9 test videos (group 1)."""
    from softpool3d.datasets import make_synthmotion

    root = tmp_path_factory.mktemp("synth")
    make_synthmotion(root, num_classes=3, videos_per_class=7, frames=8, size=32, groups=3)
    return root


@pytest.fixture
def seed() -> int:
    """A fresh seed per test, printed so that a failure can be replayed."""
    value = int(os.environ.get("SOFTPOOL3D_TEST_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(value)
    print(f"seed={value}")
    return value


def as_tuple(value, dims):
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
