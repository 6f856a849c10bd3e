"""Library calls leave the process as they found it: the allocator, matplotlib's backend, PATH; and the
C++ kernel's build folder belongs to one build only."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib
import pytest
import torch

from softpool3d.engine import host
from softpool3d.engine.data import EpochOrder, SeededSamples, build_dataset, loader, release_memory_before_fork
from softpool3d.engine.data import stop_workers, train_sampler
from softpool3d.engine.plots import plot_confusion, plot_curves
from softpool3d.engine.study import bar_chart
from softpool3d.ops import cpp

from helpers import ROOT, tiny

TESTS = Path(__file__).resolve().parent


def resident() -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def _python(code: str, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300, env=env)


TRAIN_THEN_FREE = """
    import re, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    import torch
    from helpers import tiny
    from softpool3d.engine import train

    def resident():
        return int(re.search(r"VmRSS:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

    train(tiny(Path(sys.argv[1]), Path(sys.argv[2]), "train.stop_after_steps=1", "train.device=cpu"))
    block = torch.ones(256 * 2**20 // 4)
    held = resident()
    del block
    print((held - resident()) // 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_train_returns_freed_memory_afterwards(synth, tmp_path):
    # In a notebook (a fresh process here: the heap setting is process-wide), a tensor freed after
    # train() returns gives its memory back, as it did before train() ran.
    done = _python(TRAIN_THEN_FREE, str(synth), str(tmp_path), str(TESTS))
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) >= 200          # MiB of the 256 MiB block returned to the kernel


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_memory_is_released_right_before_workers_fork(synth, tmp_path):
    # With train.reuse_freed_memory (the CLI sets it) memory freed after the loader is built and before
    # its workers fork is handed back, so that the workers do not share it; once they run, nothing is.
    assert host.reuse_freed_memory()
    config = tiny(synth, tmp_path, "data.num_workers=1")
    seeded = SeededSamples(build_dataset(config, "train"), config.seed)
    order = EpochOrder(train_sampler(seeded, config, 0, 1))
    batches = loader(seeded, order, 4, config, train=True)
    try:
        block = torch.ones(64 * 2**20 // 4)
        del block
        kept = resident()
        release_memory_before_fork(batches)
        assert resident() < kept - 48 * 2**20
        order.start(0)
        next(iter(batches))                 # the persistent worker forks and stays
        block = torch.ones(64 * 2**20 // 4)
        del block
        kept = resident()
        release_memory_before_fork(batches)
        assert resident() > kept - 16 * 2**20
    finally:
        stop_workers(batches)
        libc = host._libc()          # glibc's defaults again, for the tests after this one
        libc.mallopt(host._M_MMAP_MAX, 65536)
        libc.mallopt(host._M_TRIM_THRESHOLD, 128 * 1024)


def test_plots_leave_matplotlibs_backend_alone(tmp_path):
    before = matplotlib.get_backend()
    matplotlib.use("svg")                  # stands for a notebook's own backend
    try:
        history = [{"epoch": 1, "train_loss": 1.0, "train_top1": 0.5, "val_loss": 1.1, "val_top1": 0.4},
                   {"epoch": 2, "train_loss": 0.8, "train_top1": 0.7}]
        plot_curves(history, tmp_path / "curves.png")
        plot_confusion(torch.tensor([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "confusion.png")
        rows = [{"model": "r3d_10", "pool": pool, "top1_mean": 80.0, "top1_std": 2.0, "top1_each": [78.0, 82.0]}
                for pool in ("soft", "max")]
        differences = [{"model": "r3d_10", "pool": "soft", "baseline": "max", "diffs": [1.0, 3.0],
                        "mean_diff": 2.0, "std_diff": 1.4}]
        bar_chart(rows, differences, tmp_path / "study.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    for name in ("curves.png", "confusion.png", "study.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_loading_the_kernel_leaves_path_alone(tmp_path):
    # PATH without ninja's folder (the venv's bin, where pip puts ninja): the build finds it all the same,
    # and the process's PATH stays what it was.
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("c++", "g++", "gcc", "cc", "sh", "ld", "as", "uname", "which"):
        found = next((Path(folder) / name for folder in ("/usr/bin", "/bin")
                      if (Path(folder) / name).exists()), None)
        if found:
            (tools / name).symlink_to(found)
    env = dict(os.environ, PATH=str(tools), PYTHONPATH=str(ROOT))
    code = """
        import os
        from softpool3d.ops import cpp
        before = os.environ["PATH"]
        print(cpp.load(), os.environ["PATH"] == before)
    """
    done = _python(code, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "True"], done.stdout + done.stderr[-3000:]


def test_build_folder_is_keyed_to_what_changes_the_build(tmp_path):
    source = tmp_path / "a" / "soft_pool_cpu.cpp"
    source.parent.mkdir()
    source.write_bytes(cpp.SOURCE.read_bytes())
    other = tmp_path / "b" / "soft_pool_cpu.cpp"
    other.parent.mkdir()
    other.write_bytes(cpp.SOURCE.read_bytes() + b"\n// another checkout's edit\n")
    flags = ["-O3", "-DCPU_CAPABILITY=AVX2"]
    name = cpp.build_name("AVX2", flags, [], source)
    assert re.fullmatch(r"softpool3d_cpu_avx2_[0-9a-f]{12}", name)
    assert cpp.build_name("AVX2", flags, [], cpp.SOURCE) == name           # same bytes, same build
    assert cpp.build_name("AVX2", flags, [], other) != name                # another source
    assert cpp.build_name("AVX2", [*flags, "-fopenmp"], ["-fopenmp"], source) != name   # other flags
    assert cpp.build_name("AVX512", flags, [], source) != name
    # Another torch install (its headers are what the kernel compiles against) is another folder too.
    code = """
        import sys, torch
        torch.__file__ = "/elsewhere/site-packages/torch/__init__.py"
        from softpool3d.ops import cpp
        print(cpp.build_name(sys.argv[1], [sys.argv[2]], [], sys.argv[3]))
    """
    done = _python(code, "AVX2", "-O3", str(source), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] != cpp.build_name("AVX2", ["-O3"], [], source)
