"""Benchmark SoftPool against the published formula, max pooling and average pooling, side by side.

Times forward, backward and forward+backward (median of --reps runs after warm-up),
measures the bytes each contender saves for backward, and prints a markdown table
with fwd+bwd also given as ratios to avg_pool and max_pool on the same case. The
contenders run round-robin (one run of each per round), so that drift in the
machine's speed affects them alike.

    softpool3d benchmark-ops                 # the full table (fp32 and bf16, 1D/2D/3D)
    softpool3d benchmark-ops --quick         # the two 3D target shapes, fp32 only
    softpool3d benchmark-ops --inputs        # k3s2p1 fwd+bwd on three kinds of input, 2 threads

``--inputs`` times SoftPool, max_pool3d and avg_pool3d (fwd+bwd, round-robin) on randn, on randn
plus one +40 per (n, c) plane, and on ReLU of a Student-t with 2 degrees of freedom: inputs like
real activations, where most windows sit far below their plane's largest value. It prints each
input's ratios to max_pool3d and to SoftPool on randn. With ATEN_CPU_CAPABILITY=avx2 (or default)
the kernel and PyTorch's pools run built for that vector width.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import textwrap
import time
from pathlib import Path

import torch
import torch.nn.functional as F


from ..ops import backend_for, cpp, force_backend, soft_pool1d, soft_pool2d, soft_pool3d

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
        # Timed under force_backend("reference") (see backend_env), forward and backward.
        return soft_pool(x, k, s, p)

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


def backend_env(name: str):
    """Run the reference contender, forward and backward, under force_backend("reference")."""
    return force_backend("reference") if name == "soft (reference)" else contextlib.nullcontext()


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


def timed_ms(run) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def bench_contenders(fns: dict, x, grad, reps: int, warmup: int) -> dict:
    """Time every contender round-robin (one run of each per round), so that drift in the
    machine's speed hits all of them alike; report medians."""
    xg = x.detach().requires_grad_(True)
    graphs, unsupported = {}, {}
    for name, fn in list(fns.items()):
        try:
            with backend_env(name):
                graphs[name] = fn(xg)
        except (NotImplementedError, RuntimeError) as error:  # e.g. avg_pool3d has no CPU bf16 kernel
            unsupported[name] = str(error).splitlines()[0]
            del fns[name]
    runs = {
        name: {
            "fwd_ms": lambda fn=fn: fn(x),
            "bwd_ms": lambda name=name: torch.autograd.grad(graphs[name], xg, grad, retain_graph=True),
            "fwd_bwd_ms": lambda fn=fn: torch.autograd.grad(fn(xg), xg, grad),
        }
        for name, fn in fns.items()
    }
    times = {name: {key: [] for key in passes} for name, passes in runs.items()}
    for round_index in range(warmup + reps):
        for name, passes in runs.items():
            for key, run in passes.items():
                with backend_env(name):
                    elapsed = timed_ms(run)
                if round_index >= warmup:
                    times[name][key].append(elapsed)
    results = {}
    for name, per_pass in times.items():
        with backend_env(name):
            results[name] = {**{key: statistics.median(values) for key, values in per_pass.items()},
                             "saved_bytes": saved_bytes(fns[name], xg)}
    results.update({name: {"unsupported": reason} for name, reason in unsupported.items()})
    return results


# --inputs: the case, and inputs like real activations.
INPUTS_CASE = ((8, 64, 8, 32, 32), 3, 2, 1)


def realistic_inputs(shape: tuple) -> dict[str, torch.Tensor]:
    """randn, randn plus one +40 per (n, c) plane, and ReLU of a Student-t with 2 degrees of freedom; float32."""
    x = torch.randn(shape)
    outlier = torch.randn(shape)
    planes = outlier.view(shape[0] * shape[1], -1)
    planes[torch.arange(planes.shape[0]), torch.randint(planes.shape[1], (planes.shape[0],))] += 40.0
    student_t = torch.relu(torch.distributions.StudentT(2.0).sample(shape))
    return {"randn": x, "randn + one 40 per plane": outlier, "ReLU(Student-t, 2 dof)": student_t}


def bench_inputs(reps: int, warmup: int, threads: int) -> None:
    """SoftPool, max_pool3d and avg_pool3d fwd+bwd on the three inputs, round-robin over inputs and contenders."""
    shape, k, s, p = INPUTS_CASE
    torch.set_num_threads(threads)
    fns = {"soft": lambda x: soft_pool3d(x, k, s, p), "max_pool3d": lambda x: F.max_pool3d(x, k, s, p),
           "avg_pool3d": lambda x: F.avg_pool3d(x, k, s, p)}
    inputs = {name: x.requires_grad_(True) for name, x in realistic_inputs(shape).items()}
    grad = torch.randn(F.max_pool3d(torch.empty(shape), k, s, p).shape)
    assert backend_for(grad) == "cpp"
    times = {(i, f): [] for i in inputs for f in fns}
    for round_index in range(warmup + reps):
        for input_name, x in inputs.items():
            for fn_name, fn in fns.items():
                elapsed = timed_ms(lambda: torch.autograd.grad(fn(x), x, grad))
                if round_index >= warmup:
                    times[input_name, fn_name].append(elapsed)
    ms = {key: statistics.median(values) for key, values in times.items()}
    print(f"# k{k}s{s}p{p} fwd+bwd on {shape}, float32, {threads} threads, kernel {cpp.capability()}, "
          f"torch {torch.__version__}, median of {reps} rounds")
    print()
    print("| input | soft ms | max_pool3d ms | avg_pool3d ms | soft / max_pool3d | soft / avg_pool3d "
          "| soft / soft on randn |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for input_name in inputs:
        soft, max_ms, avg_ms = (ms[input_name, f] for f in fns)
        print(f"| {input_name} | {soft:.1f} | {max_ms:.1f} | {avg_ms:.1f} | {soft / max_ms:.2f} | "
              f"{soft / avg_ms:.2f} | {soft / ms['randn', 'soft']:.2f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the two 3D target cases in fp32")
    parser.add_argument("--inputs", action="store_true",
                        help="k3s2p1 fwd+bwd on randn, randn with outliers and ReLU(Student-t), against max_pool3d")
    parser.add_argument("--threads", type=int, default=2, help="threads for --inputs")
    parser.add_argument("--reps", type=int, default=10, help="timed rounds per case")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--no-reference", action="store_true", help="skip the slow PyTorch reference")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args(argv)

    cases = CASES[:2] if args.quick else CASES
    dtypes = ["float32"] if args.quick else args.dtypes.split(",")
    if not cpp.load():
        sys.exit("the C++ kernel is not available; nothing to benchmark")
    torch.manual_seed(0)
    if args.inputs:
        bench_inputs(args.reps, args.warmup, args.threads)
        return
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernel {cpp.capability()}")
    results = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for label, shape, k, s, p in cases:
            dims = len(shape) - 2
            x = torch.randn(shape, dtype=dtype)
            y = POOL[dims][0](x, k, s, p)
            grad = torch.randn_like(y)
            fns = contenders(dims, k, s, p)
            if args.no_reference:
                fns.pop("soft (reference)")
            assert backend_for(x) == "cpp"
            row = {"case": label, "shape": list(shape), "dtype": dtype_name,
                   "results": bench_contenders(fns, x, grad, args.reps, args.warmup)}
            print(f"  {dtype_name} {label}: {row['results']}", file=sys.stderr)
            results.append(row)

    print()
    print("| case | dtype | contender | fwd ms | bwd ms | fwd+bwd ms | fwd+bwd / avg_pool | fwd+bwd / max_pool "
          "| saved for bwd / (in+out) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for row in results:
        base = row["results"]["avg_pool"].get("fwd_bwd_ms")
        base_max = row["results"]["max_pool"].get("fwd_bwd_ms")
        x_numel = 1
        for n in row["shape"]:
            x_numel *= n
        element = torch.empty((), dtype=getattr(torch, row["dtype"])).element_size()
        dims = len(row["shape"]) - 2
        _, _, k, s, p = next(c for c in CASES if c[0] == row["case"])
        out_numel = POOL[dims][0](torch.empty([1, 1] + row["shape"][2:]), k, s, p).numel() * row["shape"][0] * row["shape"][1]
        io_bytes = (x_numel + out_numel) * element
        for name, r in row["results"].items():
            if "unsupported" in r:
                print(f"| {row['case']} {tuple(row['shape'])} | {row['dtype']} | {name} | n/a | n/a | n/a | n/a | n/a | "
                      f"n/a ({textwrap.shorten(r['unsupported'], 60, placeholder=' ...')}) |")
                continue
            ratio = f"{r['fwd_bwd_ms'] / base:.2f}x" if base else "n/a"
            ratio_max = f"{r['fwd_bwd_ms'] / base_max:.2f}x" if base_max else "n/a"
            print(f"| {row['case']} {tuple(row['shape'])} | {row['dtype']} | {name} | {r['fwd_ms']:.1f} | "
                  f"{r['bwd_ms']:.1f} | {r['fwd_bwd_ms']:.1f} | {ratio} | {ratio_max} | "
                  f"{r['saved_bytes'] / io_bytes:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
