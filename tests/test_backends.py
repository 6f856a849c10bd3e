"""Backend selection: the environment override, the reference fallback, and the build fallback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import softpool3d as sp
from softpool3d.ops import backend_for, force_backend

ROOT = Path(__file__).resolve().parents[1]


def test_force_backend_serves_reference_and_results_agree(seed):
    x = torch.randn(2, 3, 6, 7, 8, dtype=torch.float64, requires_grad=True)
    y_cpp = sp.soft_pool3d(x, 3, 2, 1, True)
    (g_cpp,) = torch.autograd.grad(y_cpp.sum(), x)
    with force_backend("reference"):
        assert backend_for(x) == "reference"
        y_ref = sp.soft_pool3d(x, 3, 2, 1, True)
        (g_ref,) = torch.autograd.grad(y_ref.sum(), x)
    assert backend_for(x) == "cpp"
    torch.testing.assert_close(y_ref, y_cpp)
    torch.testing.assert_close(g_ref, g_cpp)
    assert torch.autograd.gradcheck(lambda t: sp.adaptive_soft_pool2d(t, 2), (x[0, :, 0].detach().requires_grad_(),))


def test_bad_backend_name_is_an_error():
    with pytest.raises(ValueError, match="force_backend='cuda-please' is not one of auto, cpp, triton, reference"):
        with force_backend("cuda-please"):
            pass
    env = dict(os.environ, SOFTPOOL3D_BACKEND="cuda-please", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", "import softpool3d"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "SOFTPOOL3D_BACKEND='cuda-please' is not one of" in done.stderr


def test_environment_override_is_read_at_import():
    code = ("import torch, softpool3d as sp\nfrom softpool3d.ops import backend_for\n"
            "x = torch.randn(1, 2, 4, 4, 4)\nassert backend_for(x) == 'reference', backend_for(x)\n"
            "print(sp.soft_pool3d(x, 2).shape)\n")
    env = dict(os.environ, SOFTPOOL3D_BACKEND="reference", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_no_compiler_falls_back_to_reference_with_one_warning(tmp_path):
    script = (
        "import warnings, torch, softpool3d as sp\n"
        "from softpool3d.ops import backend_for\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    x = torch.randn(1, 2, 4, 4, 4)\n"
        "    y = sp.soft_pool3d(x, 2); sp.soft_pool3d(x, 2)\n"
        "msgs = [str(w.message) for w in caught if 'C++ CPU kernel could not be built' in str(w.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert backend_for(x) == 'reference'\n"
        "from softpool3d.ops import reference\n"
        "from softpool3d.ops._geometry import pool_windows\n"
        "torch.testing.assert_close(y, reference.forward(x, pool_windows((4, 4, 4), (2,)*3, (2,)*3, (0,)*3, False)))\n"
        "print('fallback ok')\n"
    )
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"),
               PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fallback ok" in result.stdout


def test_the_ops_dispatch_by_device():
    # PyTorch's dispatcher, not a Python switch, picks the kernel: each op has CPU and CUDA kernels of its own.
    for op in ("soft_pool", "soft_pool_backward", "adaptive_soft_pool", "adaptive_soft_pool_backward"):
        table = torch._C._dispatch_dump(f"softpool3d::{op}")
        assert "\nCPU: " in table and "\nCUDA: " in table, table
    x = torch.randn(2, 3, 6, 6, 6, device="meta")
    assert sp.soft_pool3d(x, 2).shape == (2, 3, 3, 3, 3)      # the fake kernel: shapes without data
