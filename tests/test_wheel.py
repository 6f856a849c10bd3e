"""The wheel works outside the repository: ``pip wheel .``, installed into a fresh virtual environment,
run from a folder outside the clone.

The fresh environment sees this one's packages (torch, av, ...) through ``--system-site-packages`` and a
``.pth`` line naming this environment's site-packages (a line adds the folder to ``sys.path`` without
running that folder's own ``.pth`` files, so this checkout's editable install stays out); the wheel is
installed with ``--no-deps``, so nothing is downloaded.
"""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT


def _run(command: list, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's bin folder, a folder outside the clone, the environment to run in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHONPATH", "SOFTPOOL3D_BACKEND", "VIRTUAL_ENV"))}
    _run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation", "-q",
          "-w", tmp / "dist"], cwd=tmp, env=env)
    (wheel,) = (tmp / "dist").glob("softpool3d-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp, env=env)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp, env=env).stdout.strip())
    (site / "outer_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp, env=env)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", TORCH_EXTENSIONS_DIR=str(tmp / "extensions"),
               OMP_NUM_THREADS="1")
    return venv / "bin", elsewhere, env, wheel


def test_wheel_holds_the_cpp_source_and_the_configs(installed):
    names = zipfile.ZipFile(installed[3]).namelist()
    assert "softpool3d/ops/csrc/soft_pool_cpu.cpp" in names
    shipped = {name for name in names if name.startswith("softpool3d/configs/") and name.endswith(".yaml")}
    in_repo = {f"softpool3d/configs/{p.relative_to(ROOT / 'configs').as_posix()}" for p in (ROOT / "configs").rglob("*.yaml")}
    assert shipped == in_repo


def test_installed_command_runs_outside_the_clone(installed):
    bin_dir, elsewhere, env, _ = installed
    done = _run([bin_dir / "softpool3d", "--help"], cwd=elsewhere, env=env)
    for command in ("train", "test", "predict", "export", "check-videos", "resize-videos", "extract-features",
                    "demo", "benchmark-ops", "env", "configs"):
        assert f"  {command} " in done.stdout, command
    location = _run([bin_dir / "python", "-c", "import softpool3d; print(softpool3d.__file__)"], cwd=elsewhere, env=env)
    assert Path(location.stdout.strip()).is_relative_to(bin_dir.parent), location.stdout
    version = _run([bin_dir / "softpool3d", "--version"], cwd=elsewhere, env=env)
    assert version.stdout.split() == ["softpool3d", _run([bin_dir / "python", "-c", "import softpool3d; print(softpool3d.__version__)"], cwd=elsewhere, env=env).stdout.strip()]
    configs = _run([bin_dir / "softpool3d", "configs"], cwd=elsewhere, env=env)
    assert "synthmotion" in configs.stdout.split() and "ucf101/r3d_18_soft" in configs.stdout.split()


def test_installed_cpu_kernel_builds_from_the_installed_source(installed):
    bin_dir, elsewhere, env, _ = installed
    script = (
        "import torch, softpool3d\n"
        "from softpool3d.ops import cpp, reference\n"
        "from softpool3d.ops._geometry import pool_windows\n"
        "x = torch.randn(2, 3, 6, 7, 8, dtype=torch.float64, requires_grad=True)\n"
        "assert cpp.SOURCE.is_relative_to(__import__('pathlib').Path(softpool3d.__file__).parent), cpp.SOURCE\n"
        "assert softpool3d.backend_for(x) == 'cpp', softpool3d.backend_for(x)\n"
        "y = softpool3d.soft_pool3d(x, 3, 2, 1)\n"
        "expected = reference.forward(x.detach(), pool_windows(x.shape[-3:], (3,) * 3, (2,) * 3, (1,) * 3, False))\n"
        "torch.testing.assert_close(y.detach(), expected)\n"
        "print('built in', cpp.build_directory())\n"
    )
    done = _run([bin_dir / "python", "-c", script], cwd=elsewhere, env=env)
    assert env["TORCH_EXTENSIONS_DIR"] in done.stdout
    report = _run([bin_dir / "softpool3d", "env"], cwd=elsewhere, env=env)
    rows = dict(line.split(None, 1) for line in report.stdout.splitlines() if " " in line)
    assert rows["torch"].strip() != "not installed" and rows["av"].strip() != "not installed"
    assert "built in" in report.stdout and env["TORCH_EXTENSIONS_DIR"] in report.stdout
    assert "cpu backend" in report.stdout and "gpu" in rows


def test_installed_train_then_predict(installed):
    bin_dir, elsewhere, env, _ = installed
    tool = bin_dir / "softpool3d"
    _run([tool, "make-synthmotion", "synth", "--num-classes", "3", "--videos-per-class", "5", "--frames", "8",
          "--size", "32", "--groups", "3", "--workers", "1"], cwd=elsewhere, env=env)
    _run([tool, "train", "--config", "synthmotion", "data.root=synth", "output_dir=runs", "name=tiny",
          "model.name=r3d_10", "data.clip_len=4", "data.frame_interval=1", "data.short_side=32",
          "data.crop_size=32", "data.num_workers=0", "data.generate=false", "train.batch_size=4",
          "train.epochs=1", "train.progress=false", "train.val_every=0"], cwd=elsewhere, env=env)
    video = sorted((elsewhere / "synth" / "videos").rglob("*.mp4"))[0]
    done = _run([tool, "predict", video, "--checkpoint", "runs/tiny/last.pt"], cwd=elsewhere, env=env)
    lines = done.stdout.splitlines()
    assert lines[0] == str(video) and len(lines) == 4          # the path, then 3 classes
    assert all("%" in line for line in lines[1:])
