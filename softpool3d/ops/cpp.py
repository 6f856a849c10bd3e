"""The CPU implementation of the ``softpool3d`` ops: builds, loads and calls the C++ kernel
(``csrc/soft_pool_cpu.cpp``).

The kernel is compiled with ``torch.utils.cpp_extension`` and ninja on first use
and cached (``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``, in a folder
named by what the build depends on, see ``build_name``);
``make install`` builds it ahead of time. The build targets the CPU's vector
capability as PyTorch detects it (AVX-512, AVX2 or portable C++), with OpenMP
where PyTorch uses it, so that ``at::parallel_for`` spreads the planes over
``torch.get_num_threads()`` threads (without ``-fopenmp`` it runs them on one).
Without a working compiler the op falls back to the PyTorch reference with one warning.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

from ._geometry import Windows, flat_windows

SOURCE = Path(__file__).with_name("csrc") / "soft_pool_cpu.cpp"

# PyTorch's name for the capability -> compiler flags for ATen's vector headers.
_CAPABILITY_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
               "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "DEFAULT": ["-DCPU_CAPABILITY=DEFAULT"],
}


def capability() -> str:
    """The vector capability the kernel is built for: ``"AVX512"``, ``"AVX2"`` or ``"DEFAULT"``."""
    cap = torch.backends.cpu.get_cpu_capability().upper()
    if cap.startswith("AVX512"):
        return "AVX512"
    return cap if cap in _CAPABILITY_FLAGS else "DEFAULT"


def _openmp_flags() -> list[str]:
    """``-fopenmp`` where PyTorch itself runs on OpenMP (Linux wheels); the kernel then shares its
    runtime (the already loaded ``libgomp.so.1``) and its thread count."""
    if torch.backends.openmp.is_available() and sys.platform.startswith("linux"):
        return ["-fopenmp"]
    return []


def _ninja_folder() -> Optional[Path]:
    """Where ninja is when it is not on PATH: pip's ninja lives in the venv's bin folder, which is not
    on PATH unless the venv is activated. None when PATH finds it (or nothing does)."""
    if shutil.which("ninja"):
        return None
    candidates = [Path(sys.executable).parent]
    try:
        import ninja  # noqa: PLC0415

        candidates.insert(0, Path(ninja.BIN_DIR))
    except ImportError:
        pass
    return next((folder for folder in candidates if (folder / "ninja").exists()), None)


@contextlib.contextmanager
def _path_for_the_build():
    """PATH with ninja's folder first while the build runs (its subprocesses read PATH), as it was after."""
    folder = _ninja_folder()
    if folder is None:
        yield
        return
    saved = os.environ.get("PATH")
    os.environ["PATH"] = f"{folder}{os.pathsep}{saved or ''}"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["PATH"]
        else:
            os.environ["PATH"] = saved


def build_name(cap: str, cflags: Sequence[str], ldflags: Sequence[str], source: Path = SOURCE) -> str:
    """The extension's name, which is also its build folder under ``TORCH_EXTENSIONS_DIR/<python>_<cuda>/``.

    ``softpool3d_cpu_<capability>_<hash>``: the hash covers everything that changes the build (torch's
    version and install path, whose headers it compiles against, the compiler, flags, the source), so
    two installs or checkouts never share a folder and each keeps its own build instead of rebuilding
    over the other's on every first call.
    """
    parts = [torch.__version__, str(Path(torch.__file__).resolve().parent), sys.version, os.environ.get("CXX", ""),
             *cflags, "--", *ldflags, hashlib.sha256(Path(source).read_bytes()).hexdigest()]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
    return f"softpool3d_cpu_{cap.lower()}_{digest}"


def _build_settings() -> tuple[str, list[str], list[str]]:
    """(capability, compiler flags, linker flags) of this machine's build."""
    cap = capability()
    openmp = _openmp_flags()
    return cap, ["-O3", *openmp, *_CAPABILITY_FLAGS[cap]], openmp


def build_directory() -> Path:
    """The folder this machine's build of the kernel lives in (``TORCH_EXTENSIONS_DIR`` is honoured)."""
    from torch.utils import cpp_extension  # noqa: PLC0415

    return Path(cpp_extension._get_build_directory(build_name(*_build_settings()), verbose=False))


@functools.cache
def load() -> bool:
    """Compile (or reuse the cached build of) the kernel; True when ``torch.ops.softpool3d._cpp_forward`` is ready.

    ``SOFTPOOL3D_VERBOSE_BUILD=1`` shows the compiler's output.
    """
    # Importing cpp_extension logs a CUDA_HOME notice that means nothing for a CPU build.
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension  # noqa: PLC0415
    finally:
        logger.setLevel(level)

    cap, cflags, openmp = _build_settings()
    try:
        with _path_for_the_build():
            cpp_extension.load(
                name=build_name(cap, cflags, openmp),
                sources=[str(SOURCE)],
                extra_cflags=cflags,
                extra_ldflags=openmp,
                is_python_module=False,
                verbose=os.environ.get("SOFTPOOL3D_VERBOSE_BUILD", "") == "1",
            )
    except Exception as error:  # noqa: BLE001 - any build failure means: use the reference
        warnings.warn(
            f"softpool3d: the C++ CPU kernel could not be built ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[-1] if str(error).strip() else error}); "
            "falling back to the slower PyTorch reference.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def forward(x: torch.Tensor, windows: Windows) -> torch.Tensor:
    """SoftPool of x (N, C, *spatial) over ``windows`` -> (N, C, *out), in x's dtype and memory format."""
    return torch.ops.softpool3d._cpp_forward(x, flat_windows(windows))


def backward(grad: torch.Tensor, x: torch.Tensor, windows: Windows) -> torch.Tensor:
    """Exact dL/dx (N, C, *spatial) from dL/dy (N, C, *out) and x (y is recomputed)."""
    return torch.ops.softpool3d._cpp_backward(grad, x, flat_windows(windows))

