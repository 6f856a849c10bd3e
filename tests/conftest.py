import importlib.util
import os
import random
import warnings
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter, which must be chosen before
# Triton is first imported (its own tl.* helpers are jit functions too).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """A tiny SynthMotion: 3 classes x 7 videos of 8 frames at 32x32; 12 train videos, 9 test videos (group 1)."""
    from softpool3d.datasets import make_synthmotion

    root = tmp_path_factory.mktemp("synth")
    make_synthmotion(root, num_classes=3, videos_per_class=7, frames=8, size=32, groups=3)
    return root


@pytest.fixture(scope="module")
def synth6(tmp_path_factory) -> Path:
    """6 classes (both mirror pairs and MoveUp/MoveDown) x 6 videos of 8 frames at 32x32: 4 train, 2 test each."""
    from softpool3d.datasets import make_synthmotion

    root = tmp_path_factory.mktemp("synth6")
    make_synthmotion(root, num_classes=6, videos_per_class=6, frames=8, size=32, groups=3)
    return root


@pytest.fixture
def seed() -> int:
    """A fresh seed per test, printed so that a failure can be replayed."""
    value = int(os.environ.get("SOFTPOOL3D_TEST_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(value)
    print(f"seed={value}")
    return value


# Every SoftPool backend, for the tests that take the ``device`` fixture (op contract, double backward).
BACKENDS = ["reference", "cpp", pytest.param("triton", marks=pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="needs Triton"))]


@pytest.fixture(params=BACKENDS)
def device(request):
    """Serve every SoftPool call of the test with one backend; the value is the device its tensors go on."""
    from softpool3d.ops import backend_for, force_backend   # after TRITON_INTERPRET is chosen above

    name = request.param
    device = "cuda" if name == "triton" and torch.cuda.is_available() else "cpu"
    with force_backend(name), warnings.catch_warnings():
        # The interpreter evaluates masked-off lanes too, in numpy, which warns about their inf/nan.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton")
        assert backend_for(torch.zeros(1, 1, 2, device=device)) == name
        yield device
