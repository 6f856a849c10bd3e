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
    """ONNX (opset 18, standard operators only) of ``model`` at ``example``'s shape and dtype with a dynamic batch.

    float32, float16 and bfloat16 models are exported as they are (SoftPool computes in float32 inside, as its
    kernels do). Opset 18 has no bfloat16 Conv, so a bfloat16 model with convolutions is refused in one line.
    """
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # the exporter's notices about its own defaults
        program = torch.onnx.export(model.eval(), (example,), dynamo=True, custom_translation_table=TRANSLATIONS,
                                    opset_version=OPSET, dynamic_shapes=_dynamic_batch(), input_names=["clips"],
                                    output_names=["logits"], verbose=False)
    _check_valid(program.model_proto, example.dtype)
    program.save(str(path))
    return Path(path)


def _check_valid(model_proto, dtype: torch.dtype) -> None:
    """Refuse, in one line, a graph that breaks the ONNX standard (an ONNX Runtime would refuse to load it)."""
    import onnx  # noqa: PLC0415

    try:
        onnx.checker.check_model(model_proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        reason = str(error).strip().splitlines()[0]
        hint = "; export it in float32 or float16" if dtype == torch.bfloat16 else ""
        raise ValueError(f"export_onnx: the model in {dtype} is not valid ONNX opset {OPSET}: {reason}{hint}") from None


def onnx_session(path: Union[str, Path]):
    """A CPU ONNX Runtime session for ``path``."""
    import onnxruntime  # noqa: PLC0415

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


_ONNX_BFLOAT16 = 16  # onnx.TensorProto.BFLOAT16


def run_onnx(session, x: torch.Tensor) -> torch.Tensor:
    """The session's first output for input ``x`` (any float dtype, bfloat16 included), as a CPU tensor."""
    name = session.get_inputs()[0].name
    if x.dtype != torch.bfloat16:
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    # numpy has no bfloat16: hand ONNX Runtime the raw 16-bit words and read its output's words back.
    import ctypes  # noqa: PLC0415

    import onnxruntime  # noqa: PLC0415

    words = x.contiguous().view(torch.uint16).numpy()
    binding = session.io_binding()
    binding.bind_ortvalue_input(name, onnxruntime.OrtValue.ortvalue_from_numpy_with_onnx_type(
        words, onnx_element_type=_ONNX_BFLOAT16))
    binding.bind_output(session.get_outputs()[0].name, "cpu")
    session.run_with_iobinding(binding)
    output = binding.get_outputs()[0]
    if output.data_type() != "tensor(bfloat16)":
        raise ValueError(f"run_onnx: a bfloat16 input gave a {output.data_type()} output")
    shape = output.shape()
    raw = ctypes.string_at(output.data_ptr(), 2 * int(torch.Size(shape).numel()))
    return torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).reshape(shape)


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
