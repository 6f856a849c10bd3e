"""Benchmark SoftPool against the published formula, max pooling and average pooling, side by side.

Times forward, backward and forward+backward (median of --reps runs after warm-up),
measures the bytes each contender saves for backward, and prints a markdown table
with every time also given as a ratio to avg_pool on the same case.

    python tools/benchmark_ops.py                 # the full table (fp32 and bf16, 1D/2D/3D)
    python tools/benchmark_ops.py --quick         # the two 3D target shapes, fp32 only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.ops import _registration, cpu, soft_pool1d, soft_pool2d, soft_pool3d  # noqa: E402

POOL = {1: (F.max_pool1d, F.avg_pool1d, soft_pool1d),
        2: (F.max_pool2d, F.avg_pool2d, soft_pool2d),
        3: (F.max_pool3d, F.avg_pool3d, soft_pool3d)}

# (label, shape, kernel, stride, padding)
CASES = [
    ("3D k2 s2", (4, 64, 16, 56, 56), 2, 2, 0),
    ("3D k3 s2 p1", (4, 64, 16, 56, 56), 3, 2, 1),
    ("2D k3 s2 p1", (8, 64, 112, 112), 3, 2, 1),
    ("2D k2 s2", (8, 64, 112, 112), 2, 2, 0),
    ("1D k2 s2", (32, 256, 1024), 2, 2, 0),
    ("1D k3 s2 p1", (32, 256, 1024), 3, 2, 1),
]


def contenders(dims: int, k: int, s: int, p: int) -> dict:
    max_pool, avg_pool, soft_pool = POOL[dims]

    def soft_cpp(x):
        return soft_pool(x, k, s, p)

    def soft_reference(x):
        os.environ["SOFTPOOL3D_BACKEND"] = "reference"
        try:
            return soft_pool(x, k, s, p)
        finally:
            os.environ.pop("SOFTPOOL3D_BACKEND")

    def formula(x):
        # The published formula; its avg_pool counts padding, so it is exact only without padding.
        e = torch.exp(x)
        return avg_pool(x * e, k, s, p) / avg_pool(e, k, s, p)

    return {
        "soft (cpp)": soft_cpp,
        "soft (reference)": soft_reference,
        "formula": formula,
        "max_pool": lambda x: max_pool(x, k, s, p),
        "avg_pool": lambda x: avg_pool(x, k, s, p),
    }


def saved_bytes(fn, x) -> int:
    """Bytes of distinct storages that autograd keeps for backward."""
    seen: dict[int, int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(seen.values())


def median_ms(run, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_case(fn, x, grad, reps: int, warmup: int) -> dict:
    xg = x.detach().requires_grad_(True)
    fwd = median_ms(lambda: fn(x), reps, warmup)
    y = fn(xg)
    bwd = median_ms(lambda: torch.autograd.grad(y, xg, grad, retain_graph=True), reps, warmup)
    both = median_ms(lambda: torch.autograd.grad(fn(xg), xg, grad), reps, warmup)
    return {"fwd_ms": fwd, "bwd_ms": bwd, "fwd_bwd_ms": both, "saved_bytes": saved_bytes(fn, xg)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the two 3D target cases in fp32")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--no-reference", action="store_true", help="skip the slow PyTorch reference")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()

    cases = CASES[:2] if args.quick else CASES
    dtypes = ["float32"] if args.quick else args.dtypes.split(",")
    if not cpu.load():
        sys.exit("the C++ kernel is not available; nothing to benchmark")
    torch.manual_seed(0)
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernel {cpu.capability()}")
    results = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for label, shape, k, s, p in cases:
            dims = len(shape) - 2
            x = torch.randn(shape, dtype=dtype)
            y = POOL[dims][0](x, k, s, p)
            grad = torch.randn_like(y)
            row = {"case": label, "shape": list(shape), "dtype": dtype_name, "results": {}}
            for name, fn in contenders(dims, k, s, p).items():
                if name == "soft (reference)" and args.no_reference:
                    continue
                reps = max(2, args.reps // 3) if name == "soft (reference)" else args.reps
                assert name != "soft (cpp)" or _registration.backend_for(x) == "cpp"
                row["results"][name] = bench_case(fn, x, grad, reps, args.warmup)
                print(f"  {dtype_name} {label} {name}: {row['results'][name]}", file=sys.stderr)
            results.append(row)

    print()
    print("| case | dtype | contender | fwd ms | bwd ms | fwd+bwd ms | fwd+bwd / avg_pool | saved for bwd / (in+out) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for row in results:
        base = row["results"]["avg_pool"]["fwd_bwd_ms"]
        x_numel = 1
        for n in row["shape"]:
            x_numel *= n
        element = torch.empty((), dtype=getattr(torch, row["dtype"])).element_size()
        dims = len(row["shape"]) - 2
        _, _, k, s, p = next(c for c in CASES if c[0] == row["case"])
        out_numel = POOL[dims][0](torch.empty([1, 1] + row["shape"][2:]), k, s, p).numel() * row["shape"][0] * row["shape"][1]
        io_bytes = (x_numel + out_numel) * element
        for name, r in row["results"].items():
            print(f"| {row['case']} {tuple(row['shape'])} | {row['dtype']} | {name} | {r['fwd_ms']:.1f} | "
                  f"{r['bwd_ms']:.1f} | {r['fwd_bwd_ms']:.1f} | {r['fwd_bwd_ms'] / base:.2f}x | "
                  f"{r['saved_bytes'] / io_bytes:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
