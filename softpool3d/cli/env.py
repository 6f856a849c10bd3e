"""Print what a bug report needs: versions, the CPU's vector capability, the C++ kernel's build, the GPU.

    softpool3d env

In the manner of ``python -m torch.utils.collect_env``, for softpool3d's own parts.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
from typing import Optional, Sequence

PACKAGES = ("softpool3d", "torch", "torchvision", "triton", "av", "torchcodec", "decord", "numpy", "omegaconf")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report() -> list[tuple[str, str]]:
    """(label, value) rows: versions, CPU, the C++ kernel, the GPU and the backend that serves it."""
    import torch  # noqa: PLC0415

    from ..ops import backend_for, cpp  # noqa: PLC0415

    rows = [("python", sys.version.split()[0]), ("platform", platform.platform())]
    rows += [(package, _version(package)) for package in PACKAGES]
    rows += [
        ("cpu", f"{_cpu_model()}, {os.cpu_count()} logical cores"),
        ("cpu capability", f"{torch.backends.cpu.get_cpu_capability()} (kernel built for {cpp.capability()})"),
        ("torch threads", str(torch.get_num_threads())),
    ]
    built = cpp.load()
    rows.append(("c++ kernel", f"built in {cpp.build_directory()}" if built else "NOT built (the PyTorch reference serves the CPU)"))
    rows.append(("cpu backend", backend_for(torch.zeros(1, 1, 2, 2, 2))))
    if torch.cuda.is_available():
        device = torch.device("cuda")
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        rows.append(("gpu", f"{torch.cuda.get_device_name(device)} (sm {capability}), CUDA {torch.version.cuda}"))
        rows.append(("gpu backend", backend_for(torch.zeros(1, 1, 2, 2, 2, device=device))))
    else:
        rows.append(("gpu", "none (torch.cuda.is_available() is False)"))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    rows = report()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0
