"""Triton's real code generator, not the interpreter: every kernel specialisation that the host code
launches compiles to a cubin for sm_80 and sm_90. No GPU is needed; Triton's bundled ptxas runs here."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")    # compile for real, not from a cache
    return env


def test_every_launched_specialisation_compiles_for_sm80_and_sm90(tmp_path):
    runs = {arch: subprocess.Popen([sys.executable, "-m", "softpool3d.ops.triton_aot", "--arch", str(arch),
                                    "--quiet", "--json", str(tmp_path / f"sm{arch}.json")],
                                   cwd=ROOT, env=_env(tmp_path / str(arch)), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            for arch in (80, 90)}                                    # one process per core
    for arch, run in runs.items():
        out, err = run.communicate(timeout=900)
        assert run.returncode == 0, err[-4000:]
        records = json.loads((tmp_path / f"sm{arch}.json").read_text())
        assert f"{len(records)} compiled" in out
        assert {r["arch"] for r in records} == {arch}
        # The recorded launches reach every kernel, dtype, accumulation dtype, window kind and layout.
        assert {r["kernel"] for r in records} == {"_forward_kernel", "_disjoint_backward_kernel", "_stats_kernel",
                                                  "_gather_backward_kernel"}
        inputs = {t for r in records for name, t in r["signature"].items() if name == "x_ptr"}
        assert inputs == {"*fp32", "*fp16", "*bf16", "*fp64"}
        for key, values in {"ACC": {"fp32", "fp64"}, "ADAPTIVE": {True, False}, "CHANNELS_LAST": {True, False}}.items():
            assert {r["constexprs"][key] for r in records} == values, key
        assert all(r["registers"] > 0 for r in records)


BROKEN = """
import triton, triton.language as tl
from softpool3d.ops.triton_aot import Launch, compile_launch

@triton.jit
def broken(x_ptr, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(x_ptr + i, tl.load(x_ptr + i) @ 3, mask=i < n)      # '@' needs 2D blocks: a codegen error

launch = Launch(broken, (("x_ptr", "*fp32"), ("n", "i32")), (("BLOCK", 128),))
try:
    compile_launch(launch, 90)
except triton.compiler.CompilationError as error:
    print("refused:", type(error).__name__)
"""


def test_a_kernel_that_does_not_compile_fails_the_check(tmp_path):
    script = tmp_path / "broken_kernel.py"           # Triton reads a kernel's source from its file
    script.write_text(BROKEN)
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert "refused: CompilationError" in done.stdout, done.stderr[-3000:]
