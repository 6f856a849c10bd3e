"""Correctness suite and benchmark of the Triton kernels on a GPU, in one script.

Needs only torch and triton (no torchvision, no av, no network). It

1. checks the op on the device against the float64 reference, forward and
   backward, for 1D/2D/3D, regular and adaptive windows, contiguous and
   channels_last, in float32/float16/bfloat16/float64, with the caching
   allocator poisoned with NaN first so that an element the kernel forgets to
   write fails the check; then gradcheck, opcheck, torch.compile(fullgraph=True),
   autocast, a side stream, a second GPU when there is one, and 64-bit indexing;
2. times forward, backward and forward+backward (CUDA events, median) for
   SoftPool (Triton), the published formula, max_pool and avg_pool, and the
   forward's bandwidth against a device-to-device copy of the same tensor;
3. writes JSON (``$OUT/gpu_check.json`` or ``--json``) and prints a markdown
   table last.

    softpool3d gpu-check                # on a CUDA machine, under 5 minutes
    TRITON_INTERPRET=1 softpool3d gpu-check --device cpu --quick   # the logic, on a CPU
    softpool3d gpu-check --aot          # no GPU needed: compile every kernel for sm_80/sm_90,
                                             # print registers and spills per specialisation
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch


from ..ops import backend_for, force_backend
from ..ops.gpu_checks import AVG, MAX, SOFT, Checks, correctness

# ------------------------------------------------------------------ timing


def cuda_time(fn, reps: int, warmup: int) -> float:
    """Median milliseconds of ``fn`` over ``reps`` runs, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


BENCH_CASES = [
    ("3D k2 s2", (8, 64, 16, 56, 56), 2, 2, 0),
    ("3D k3 s2 p1", (8, 64, 16, 56, 56), 3, 2, 1),
    ("2D k2 s2", (32, 64, 112, 112), 2, 2, 0),
    ("2D k3 s2 p1", (32, 64, 112, 112), 3, 2, 1),
    ("1D k2 s2", (64, 256, 4096), 2, 2, 0),
    ("1D k3 s2 p1", (64, 256, 4096), 3, 2, 1),
]


def benchmark(device: torch.device, reps: int, warmup: int) -> list[dict]:
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for label, shape, k, s, p in BENCH_CASES:
            dims = len(shape) - 2
            x = torch.randn(shape, device=device, dtype=dtype)
            copy_out = torch.empty_like(x)
            copy_ms = cuda_time(lambda: copy_out.copy_(x), reps, warmup)
            copy_bw = 2 * x.numel() * x.element_size() / copy_ms / 1e6  # GB/s

            def formula(t):
                e = torch.exp(t)
                return AVG[dims](t * e, k, s, p) / AVG[dims](e, k, s, p)

            contenders = {
                "soft (triton)": lambda t: SOFT[dims](t, k, s, p),
                "formula": formula,
                "max_pool": lambda t: MAX[dims](t, k, s, p),
                "avg_pool": lambda t: AVG[dims](t, k, s, p),
            }
            times = {}
            for name, fn in contenders.items():
                xg = x.detach().requires_grad_(True)
                y = fn(xg)
                g = torch.randn_like(y)
                fwd = cuda_time(lambda: fn(x), reps, warmup)
                bwd = cuda_time(lambda: torch.autograd.grad(y, xg, g, retain_graph=True), reps, warmup)
                both = cuda_time(lambda: torch.autograd.grad(fn(xg), xg, g), reps, warmup)
                times[name] = {"fwd_ms": fwd, "bwd_ms": bwd, "fwd_bwd_ms": both}
                if name == "soft (triton)":
                    out_bytes = y.numel() * y.element_size()
            soft = times["soft (triton)"]
            fwd_bw = (x.numel() * x.element_size() + out_bytes) / soft["fwd_ms"] / 1e6
            rows.append({
                "case": label, "shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
                "times": times, "copy_gbps": copy_bw, "soft_fwd_gbps": fwd_bw,
                "fwd_bandwidth_fraction": fwd_bw / copy_bw,
                "fwd_bwd_vs_avg": soft["fwd_bwd_ms"] / times["avg_pool"]["fwd_bwd_ms"],
                "fwd_bwd_vs_max": soft["fwd_bwd_ms"] / times["max_pool"]["fwd_bwd_ms"],
                "fwd_vs_formula": times["formula"]["fwd_ms"] / soft["fwd_ms"],
                "bwd_vs_formula": times["formula"]["bwd_ms"] / soft["bwd_ms"],
            })
            print(f"timed {label} {dtype}: soft fwd+bwd {soft['fwd_bwd_ms']:.3f} ms, "
                  f"{rows[-1]['fwd_bwd_vs_avg']:.2f}x avg_pool", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| case | dtype | soft fwd | soft bwd | soft fwd+bwd | avg_pool fwd+bwd | max_pool fwd+bwd | "
        "soft / avg (target 1.3x) | fwd bandwidth vs copy (target 70%) | formula/soft fwd | formula/soft bwd |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = r["times"]
        lines.append(
            f"| {r['case']} | {r['dtype']} | {t['soft (triton)']['fwd_ms']:.3f} ms | {t['soft (triton)']['bwd_ms']:.3f} ms"
            f" | {t['soft (triton)']['fwd_bwd_ms']:.3f} ms | {t['avg_pool']['fwd_bwd_ms']:.3f} ms"
            f" | {t['max_pool']['fwd_bwd_ms']:.3f} ms | {r['fwd_bwd_vs_avg']:.2f}x"
            f" | {100 * r['fwd_bandwidth_fraction']:.0f}% ({r['soft_fwd_gbps']:.0f} of {r['copy_gbps']:.0f} GB/s)"
            f" | {r['fwd_vs_formula']:.1f}x | {r['bwd_vs_formula']:.1f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu under TRITON_INTERPRET=1")
    parser.add_argument("--quick", action="store_true", help="fewer correctness cases, no timing")
    parser.add_argument("--skip-correctness", action="store_true")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="default: $OUT/gpu_check.json when $OUT is set")
    parser.add_argument("--aot", action="store_true",
                        help="compile every kernel specialisation for sm_80 and sm_90 and report registers and "
                             "spills (softpool3d.ops.triton_aot); needs no GPU")
    args = parser.parse_args(argv)
    if args.aot:
        from ..ops import triton_aot  # noqa: PLC0415

        return triton_aot.main(["--arch", "80", "90"] + (["--json", str(args.json)] if args.json else []))

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error("no CUDA device; for the kernels' logic on a CPU use --device cpu with TRITON_INTERPRET=1")
        torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device)
    else:
        if os.environ.get("TRITON_INTERPRET") != "1":
            parser.error("--device cpu needs TRITON_INTERPRET=1 (the Triton interpreter)")
        name = platform.processor() or "cpu"
    with force_backend("triton"):
        return run_checks(args, device, name)


def run_checks(args, device: torch.device, name: str) -> int:
    """The correctness suite, then (on CUDA) the benchmark; prints the report and returns the exit status."""
    probe = torch.zeros(1, 1, 2, device=device)
    import triton  # noqa: PLC0415

    info = {"device": name, "torch": torch.__version__, "triton": triton.__version__,
            "backend": backend_for(probe), "quick": args.quick}
    print(json.dumps(info), flush=True)
    torch.manual_seed(int(os.environ.get("SOFTPOOL3D_TEST_SEED", "0")))

    checks = Checks()
    if not args.skip_correctness:
        correctness(checks, device, args.quick)
    rows = benchmark(device, args.reps, args.warmup) if device.type == "cuda" and not args.quick else []

    failed = [c for c in checks.results if not c["ok"]]
    report = {**info, "checks": checks.results, "failed": len(failed), "benchmark": rows}
    out = args.json or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
    print(f"\n{len(checks.results) - len(failed)} of {len(checks.results)} checks passed on {name}")
    for c in failed:
        print(f"FAILED: {c['check']}: {c['error']}")
    if rows:
        print(f"\nSoftPool (Triton) on {name}, torch {torch.__version__}, triton {triton.__version__}, "
              f"median of {args.reps} runs:\n")
        print(table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
