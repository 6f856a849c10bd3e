"""What is specific to the Triton kernels: deterministic backward, the GPU check script, backend selection and
the package without Triton. Their values and gradients are checked by the operator contract
(test_op_contract.py), which runs on them too; without a GPU, in Triton's interpreter."""

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import softpool3d as sp
from softpool3d.ops import backend_for, force_backend

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton")

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def triton_backend():
    with force_backend("triton"), warnings.catch_warnings():
        # The interpreter evaluates masked-off lanes too, in numpy, which warns about their inf/nan.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton")
        yield


def test_backward_is_deterministic(seed):
    x = torch.randn(2, 4, 6, 7, 8, device=DEVICE, requires_grad=True)
    grad = torch.randn(sp.soft_pool3d(x, 3, 1, 1).shape, device=DEVICE)
    first = torch.autograd.grad(sp.soft_pool3d(x, 3, 1, 1), x, grad)[0]
    second = torch.autograd.grad(sp.soft_pool3d(x, 3, 1, 1), x, grad)[0]
    assert torch.equal(first, second)


def test_gpu_check_script_runs_its_checks(tmp_path):
    """tools/gpu_check.py --quick, as a user runs it: its correctness suite, here on the interpreter
    (CUDA when there is one)."""
    env = dict(os.environ, TRITON_INTERPRET="1" if DEVICE == "cpu" else "0", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--device", DEVICE, "--quick",
                           "--json", str(tmp_path / "report.json")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["backend"] == "triton" and report["failed"] == 0 and len(report["checks"]) >= 15


def test_backend_for_names_triton(monkeypatch):
    assert backend_for(torch.zeros(1, 1, 2, device=DEVICE)) == "triton"
    if DEVICE == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(ValueError, match="TRITON_INTERPRET"):
            backend_for(torch.zeros(1, 1, 2))
        with force_backend("auto"):
            assert backend_for(torch.zeros(1, 1, 2)) == "cpp"


def test_package_works_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, softpool3d as sp\n"
        "from softpool3d.ops import backend_for\n"
        "x = torch.randn(1, 2, 4, 4, 4)\n"
        "assert backend_for(x) == 'cpp', backend_for(x)\n"
        "print(sp.soft_pool3d(x, 2).shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SOFTPOOL3D_BACKEND", "TRITON_INTERPRET")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "torch.Size([1, 2, 2, 2, 2])" in done.stdout
