"""Compile every Triton kernel specialisation the host code launches for real GPUs, without a GPU.

Triton's interpreter runs the kernels in numpy and never reaches Triton's code generator, so a kernel
can pass every interpreter test and still fail to compile for a GPU. Triton compiles ahead of time
on any machine with its bundled ``ptxas``; this module does that for every specialisation the host
code in ``triton.py`` would launch over a set of problems that reaches each of its branches (kernel,
input dtype, accumulation dtype, regular or adaptive windows, contiguous or channels_last, window and
cover sizes). The launches are recorded from the host code itself (``triton.recording_launches``), so a
new kernel or constexpr cannot escape the check.

    python -m softpool3d.ops.triton_aot --arch 80 90        # compile all; print registers and spills

It must run without ``TRITON_INTERPRET=1``, which replaces the kernels by interpreted functions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ._geometry import adaptive_windows, pool_windows

TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}
DTYPES = tuple(TRITON_TYPES)

# (input shape, geometry): geometry is ("pool", kernel, stride, padding, ceil_mode) or ("adaptive", sizes).
PROBLEMS = (
    ((2, 3, 4, 6, 8), ("pool", 2, 2, 0, False)),           # disjoint windows: one kernel per window
    ((2, 3, 5, 7, 9), ("pool", 3, 2, 1, True)),            # overlapping: stats, then gather
    ((2, 3, 5, 7, 9), ("adaptive", (1, 1, 1))),            # global SoftPool
    ((2, 3, 5, 7, 9), ("adaptive", (2, 3, 4))),            # adaptive, overlapping windows
    ((2, 3, 9, 11), ("pool", 3, 2, 1, False)),             # 2D, lifted to 3D
    ((2, 3, 11), ("pool", 4, 3, 2, False)),                # 1D, lifted to 3D
)


@dataclass(frozen=True)
class Launch:
    """One specialisation: a kernel, its argument types and its constexprs."""

    kernel: Any
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[str, Any], ...]

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__ if hasattr(self.kernel, "fn") else self.kernel.__name__

    def describe(self) -> str:
        pointers = sorted({t for _, t in self.signature if t.startswith("*")})
        shown = ", ".join(f"{k}={getattr(v, 'name', v)}" for k, v in self.constexprs if k != "BLOCK")
        return f"{self.name}({'/'.join(pointers)}; {shown})"


def _argument_type(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + TRITON_TYPES.get(value.dtype, "fp32")
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    raise TypeError(f"unexpected kernel argument {value!r}")


def _windows(shape: Sequence[int], geometry: tuple):
    spatial = shape[2:]
    if geometry[0] == "adaptive":
        return adaptive_windows(spatial, geometry[1][-len(spatial):])
    _, k, s, p, ceil = geometry
    dims = len(spatial)
    return pool_windows(spatial, (k,) * dims, (s,) * dims, (p,) * dims, ceil)


def launches() -> list[Launch]:
    """Every distinct specialisation the host code launches over ``PROBLEMS`` x dtypes x layouts."""
    from . import triton as kernels  # noqa: PLC0415

    seen: dict[tuple, Launch] = {}
    for shape, geometry in PROBLEMS:
        windows = _windows(shape, geometry)
        for dtype in DTYPES:
            for channels_last in (False, True):
                x = torch.randn(shape, dtype=torch.float64).to(dtype)
                if channels_last:
                    if x.dim() == 3:
                        continue
                    x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
                with kernels.recording_launches() as recorded:
                    y = kernels.forward(x, windows)
                    kernels.backward(torch.ones_like(y), x, windows)
                for kernel, args, constexprs in recorded:
                    names = [n for n in kernel.arg_names if n not in constexprs]
                    signature = tuple((n, _argument_type(a)) for n, a in zip(names, args, strict=True))
                    launch = Launch(kernel, signature, tuple(sorted(constexprs.items(), key=lambda kv: kv[0])))
                    seen.setdefault((launch.name, signature, repr(launch.constexprs)), launch)
    return list(seen.values())


def compile_launch(launch: Launch, arch: int):
    """Triton's full pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin) for ``sm_<arch>``; raises on failure."""
    import triton  # noqa: PLC0415
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415

    constexprs = dict(launch.constexprs)
    signature = {name: "constexpr" if name in constexprs else dict(launch.signature)[name]
                 for name in launch.kernel.arg_names}
    source = triton.compiler.ASTSource(fn=launch.kernel, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32))


def resource_usage(compiled) -> dict[str, int]:
    """Registers, spill stores/loads (bytes) and stack of a compiled kernel, read from its cubin."""
    import triton  # noqa: PLC0415

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        text = subprocess.run([str(tool), "-res-usage", cubin.name], capture_output=True, text=True,
                              check=True).stdout
    usage = {key.lower(): int(value) for key, value in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text)}
    return {"registers": usage.get("reg", -1), "stack": usage.get("stack", 0), "local": usage.get("local", 0)}


def check(archs: Sequence[int], report: bool = True) -> list[tuple[int, Launch, dict]]:
    """Compile every specialisation for every arch; returns (arch, launch, resource usage) rows."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    rows = []
    specs = launches()
    for arch in archs:
        started = time.perf_counter()
        for launch in specs:
            compiled = compile_launch(launch, arch)
            rows.append((arch, launch, resource_usage(compiled)))
        if report:
            print(f"sm_{arch}: {len(specs)} specialisations compiled in {time.perf_counter() - started:.1f} s",
                  flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities, e.g. 80 90")
    parser.add_argument("--quiet", action="store_true", help="only the summary lines")
    parser.add_argument("--json", type=Path, help="also write one record per compiled specialisation here")
    args = parser.parse_args(argv)
    rows = check(args.arch)
    if args.json:
        records = [{"arch": arch, "kernel": launch.name, "signature": dict(launch.signature),
                    "constexprs": {k: getattr(v, "name", v) for k, v in launch.constexprs}, **usage}
                   for arch, launch, usage in rows]
        args.json.write_text(json.dumps(records, indent=1))
    if not args.quiet:
        print("| sm | kernel | registers | stack | spills (local bytes) |")
        print("|---|---|---:|---:|---:|")
        for arch, launch, usage in rows:
            print(f"| {arch} | {launch.describe()} | {usage['registers']} | {usage['stack']} | {usage['local']} |")
    spilling = [(a, l) for a, l, u in rows if u["local"] > 0]
    print(f"{len(rows)} compiled, {len(spilling)} with spills")
    return 0


if __name__ == "__main__":
    sys.exit(main())
