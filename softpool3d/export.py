"""Deployment: a SoftPool model as a ``torch.export`` program (.pt2) and as ONNX for a stock ONNX Runtime.

SoftPool's custom ops have fake kernels, so ``torch.export`` traces them as they are; for ONNX they are
translated into standard operators (``ops/onnx.py``, opset 18). The batch is dynamic; the clip size is
fixed at export (the ONNX translation gathers windows by static offsets).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Sequence, Union

import torch
from torch import nn

from .ops.onnx import OPSET, TRANSLATIONS


def _dynamic_batch() -> tuple[dict, ...]:
    return ({0: torch.export.Dim("batch", min=1, max=1024)},)


def export_program(model: nn.Module, example: torch.Tensor, path: Union[str, Path]) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` (eval mode) at ``example``'s shape with a dynamic batch, saved to ``path``."""
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=_dynamic_batch())
    torch.export.save(program, str(path))
    return program


def export_onnx(model: nn.Module, example: torch.Tensor, path: Union[str, Path]) -> Path:
    """ONNX (opset 18, standard operators only) of ``model`` at ``example``'s shape with a dynamic batch."""
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # the exporter's notices about its own defaults
        program = torch.onnx.export(model.eval(), (example,), dynamo=True, custom_translation_table=TRANSLATIONS,
                                    opset_version=OPSET, dynamic_shapes=_dynamic_batch(), input_names=["clips"],
                                    output_names=["logits"], verbose=False)
    program.save(str(path))
    return Path(path)


def onnx_session(path: Union[str, Path]):
    """A CPU ONNX Runtime session for ``path``."""
    import onnxruntime  # noqa: PLC0415

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(session, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def max_differences(model: nn.Module, program: torch.export.ExportedProgram, session,
                    inputs: Sequence[torch.Tensor]) -> list[dict]:
    """Per input: the max abs difference of the exported program and of ONNX Runtime against eager PyTorch."""
    rows = []
    with torch.no_grad():
        for x in inputs:
            eager = model(x)
            rows.append({"batch": x.shape[0],
                         "export": float((program.module()(x) - eager).abs().max()),
                         "onnx": float((run_onnx(session, x) - eager).abs().max())})
    return rows


def latency(model: nn.Module, session, x: torch.Tensor, reps: int = 10, warmup: int = 2) -> dict:
    """Median ms per call of eager PyTorch and ONNX Runtime, timed round-robin on the same input."""
    times = {"eager": [], "onnxruntime": []}
    with torch.no_grad():
        for i in range(warmup + reps):
            for name, call in (("eager", lambda: model(x)), ("onnxruntime", lambda: run_onnx(session, x))):
                started = time.perf_counter()
                call()
                if i >= warmup:
                    times[name].append(1000 * (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in times.items()}


def random_clips(shape: Sequence[int], batches: Sequence[int] = (1, 3), seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn((b, *shape[1:]), generator=generator) for b in batches]


__all__ = ["OPSET", "export_onnx", "export_program", "latency", "max_differences", "onnx_session", "random_clips",
           "run_onnx"]
