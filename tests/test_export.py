"""Deployment: torch.export and ONNX (checked in a stock ONNX Runtime) for SoftPool ops and models, and torch.hub."""

import importlib.util
import subprocess
import sys
import warnings

import pytest
import torch

import softpool3d as sp
from softpool3d.models import build_model, list_models

from helpers import ROOT

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from softpool3d.export import (export_onnx, export_program, max_differences, onnx_session, random_clips,  # noqa: E402
                               run_onnx)


class Pool(torch.nn.Module):
    def __init__(self, fn, *args):
        super().__init__()
        self.fn, self.args = fn, args

    def forward(self, x):
        return self.fn(x, *self.args)


GEOMETRIES = [  # (function, input shape, arguments)
    (sp.soft_pool1d, (2, 3, 11), (3, 2, 1, True)),
    (sp.soft_pool1d, (2, 3, 10), (2, 3, 0, False)),                     # stride > kernel
    (sp.soft_pool2d, (2, 3, 7, 9), (3, 2, 1, True)),                    # padded, ceil mode
    (sp.soft_pool2d, (2, 3, 6, 5), ((2, 3), (1, 2), (1, 1), False)),
    (sp.soft_pool3d, (2, 3, 5, 6, 7), (3, 2, 1, True)),                 # the ResNet stem pool
    (sp.soft_pool3d, (2, 3, 4, 6, 8), (2, 2, 0, False)),
    (sp.soft_pool3d, (2, 3, 5, 5, 5), ((3, 2, 3), (1, 2, 3), (1, 0, 1), True)),
    (sp.adaptive_soft_pool1d, (2, 3, 10), (4,)),
    (sp.adaptive_soft_pool2d, (2, 3, 7, 9), ((3, 4),)),
    (sp.adaptive_soft_pool3d, (2, 3, 5, 6, 7), ((2, 3, 3),)),
    (sp.adaptive_soft_pool3d, (2, 3, 4, 5, 6), (1,)),                  # global SoftPool
]


@pytest.mark.parametrize("fn,shape,args", GEOMETRIES, ids=[f"{g[0].__name__}-{g[1]}-{g[2]}" for g in GEOMETRIES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_single_ops_in_onnx_runtime(tmp_path, seed, fn, shape, args, dtype):
    module = Pool(fn, *args)
    path = export_onnx(module, torch.randn(shape).to(dtype), tmp_path / "op.onnx")
    session = onnx_session(path)
    for scale in (1.0, 1e4):
        for x in random_clips(shape, (1, 3), seed):
            x = (x * scale).to(dtype)
            if dtype == torch.float32:
                rows = max_differences(module, torch.export.export(module, (x,)), session, [x])
                # 1e-4 absolute at unit scale; at +-1e4 float32's own spacing is 1e-3, so 1e-4 relative.
                assert rows[0]["onnx"] <= 1e-4 * scale, rows
                continue
            # Half precision: computed in float32 and rounded once, as the kernels do, so at most one unit in
            # the last place from eager and from the float64 reference (no NaN where windows touch padding).
            onnx_out = run_onnx(session, x)
            assert onnx_out.dtype == dtype and not onnx_out.isnan().any()
            eps = torch.finfo(dtype).eps
            with torch.no_grad():
                torch.testing.assert_close(onnx_out.double(), module(x).double(), rtol=eps, atol=1e-6 * scale)
            torch.testing.assert_close(onnx_out.double(), module(x.double()), rtol=eps, atol=1e-6 * scale)


def test_float16_model_in_onnx_runtime(tmp_path, seed):
    """A float16 r3d_10 (soft stem pool k3 s2 p1 ceil_mode, soft head) through ONNX Runtime against eager."""
    model = build_model("r3d_10", num_classes=7, pool="soft", head_pool="soft").eval().half()
    session = onnx_session(export_onnx(model, torch.randn(2, 3, 8, 32, 32).half(), tmp_path / "m.onnx"))
    for x in random_clips((1, 3, 8, 32, 32), (1, 3), seed):
        x = x.half()
        onnx_out = run_onnx(session, x)
        with torch.no_grad():
            eager = model(x)
        assert onnx_out.dtype == torch.float16 and not onnx_out.isnan().any()
        # Both run the convolutions in float16, in different orders: 2e-3 of the logits' range.
        assert (onnx_out.float() - eager.float()).abs().max() <= 2e-3 * eager.float().abs().max()


def test_bfloat16_model_with_convolutions_is_refused_in_one_line(tmp_path):
    """ONNX opset 18 has no bfloat16 Conv (ONNX Runtime refuses to load such a file); say so at export."""
    model = build_model("r3d_10", num_classes=7, pool="soft", head_pool="soft").eval().bfloat16()
    with pytest.raises(ValueError, match=r"bfloat16 is not valid ONNX opset 18: .*Conv.*float32 or float16") as error:
        export_onnx(model, torch.randn(1, 3, 8, 32, 32).bfloat16(), tmp_path / "m.onnx")
    assert "\n" not in str(error.value) and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("name,shape,kwargs", [
    ("r3d_18", (1, 3, 8, 32, 32), {"pool": "soft", "head_pool": "soft"}),
    ("i3d_r50", (1, 3, 8, 32, 32), {"pool": "soft", "head_pool": "soft"}),
    ("resnet18", (1, 3, 64, 64), {"pool": "soft", "head_pool": "avg"}),
])
def test_models_through_torch_export_and_onnx(tmp_path, seed, name, shape, kwargs):
    model = build_model(name, num_classes=7, **kwargs).eval()
    example = torch.randn(2, *shape[1:])
    program = export_program(model, example, tmp_path / "m.pt2")
    session = onnx_session(export_onnx(model, example, tmp_path / "m.onnx"))
    loaded = torch.export.load(str(tmp_path / "m.pt2"))
    rows = max_differences(model, loaded, session, random_clips(shape, (1, 3), seed))
    assert [r["batch"] for r in rows] == [1, 3]                        # one file, two batch sizes
    assert all(r["export"] <= 1e-5 and r["onnx"] <= 1e-4 for r in rows), rows
    assert program.graph_signature is not None


def test_export_tool(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), "--model", "r3d_10", "--num-classes",
                           "5", "--shape", "1,3,8,32,32", "--out", str(tmp_path / "r3d_10")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "r3d_10.pt2").is_file() and (tmp_path / "r3d_10.onnx").is_file()
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 3 |")]
    assert len(rows) == 2 and all(float(line.split("|")[3]) <= 1e-4 for line in rows)


def test_onnx_file_uses_standard_operators_only(tmp_path):
    import onnx

    module = Pool(sp.soft_pool3d, 3, 2, 1, True)
    model = onnx.load(str(export_onnx(module, torch.randn(2, 3, 5, 6, 7), tmp_path / "op.onnx")))
    assert {node.domain for node in model.graph.node} == {""} and not model.functions    # the default domain only
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 18)]
    assert {"ReduceMax", "Exp", "ReduceSum", "Slice", "Pad"} <= {node.op_type for node in model.graph.node}
    onnx.checker.check_model(model, full_check=True)


def test_torch_hub_loads_every_model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in list_models():
            model = torch.hub.load(str(ROOT), name, source="local", num_classes=3, pool="soft", trust_repo=True)
            assert isinstance(model, torch.nn.Module), name
            assert model.__class__ is build_model(name, num_classes=3, pool="soft").__class__
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert sorted(n for n in list_models() if callable(getattr(hubconf, n, None))) == list_models()
    assert "build_model('r3d_18'" in hubconf.r3d_18.__doc__ and "num_classes" in hubconf.r3d_18.__doc__


def test_export_tool_names_the_shape_and_the_models_minimum_in_one_line(tmp_path, capsys):
    import re
    from softpool3d.cli.export import main
    for name, shape, says in (("r3d_10", "1,3,8,64", "has 4 numbers; the model takes 5"),
                              ("r3d_10", "1,4,8,32,32", "has C = 4"), ("s3d", "1,3,2,32,32", "is too small (T = 2)")):
        assert main(["--model", name, "--num-classes", "5", "--out", str(tmp_path / name), "--shape", shape]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and f"--shape {shape} " in error and says in error, error
        assert not list(tmp_path.iterdir())
    # The minimum it names is honest: S3D runs on it and fails one frame or pixel below it, on real tensors.
    minimum = [int(v) for v in re.search(r"T >= (\d+), H >= (\d+), W >= (\d+)", error).groups()]
    model = build_model("s3d", num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *minimum)).shape == (1, 5)
        for axis in range(3):
            smaller = list(minimum)
            smaller[axis] -= 1
            with pytest.raises((RuntimeError, ValueError)):
                model(torch.randn(1, 3, *smaller))
