"""The one place where SoftPool becomes a ``torch.library`` custom op.

Four ops live in the ``softpool3d`` namespace:

- ``soft_pool(x, kernel_size, stride, padding, ceil_mode)`` and
  ``adaptive_soft_pool(x, output_size)``, differentiable;
- their ``*_backward`` ops, which recompute the weights and ``y`` from the
  saved input. Only the input is saved, so in-place ops on the output (``relu_``,
  ``Dropout(inplace=True)``) are safe, and a pool keeps less memory for
  backward than max pooling, which also keeps int64 indices.

Each op picks its implementation at run time with ``backend_for`` and has a
fake implementation, so ``torch.compile(fullgraph=True)`` traces it without a
graph break and ``torch.library.opcheck`` passes.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
from torch import Tensor

from . import cpu, reference
from ._geometry import (
    FLOAT_DTYPES,
    Windows,
    adaptive_windows,
    flat_windows,
    output_memory_format,
    pool_output_size,
    pool_windows,
)

BACKENDS = ("auto", "cpp", "triton", "reference")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip() == "1"


@functools.cache
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def backend_for(x: Tensor) -> str:
    """Name the implementation that serves ``x``: ``"cpp"``, ``"triton"`` or ``"reference"``.

    CPU tensors get the C++ kernel; CUDA tensors get the Triton kernels when
    Triton is installed (float64 included, accumulated in float64). Anything
    else, or a failed C++ build, gets the PyTorch reference.
    ``SOFTPOOL3D_BACKEND`` (``auto``, ``cpp``, ``triton`` or ``reference``)
    overrides the choice; ``triton`` serves CPU tensors too when
    ``TRITON_INTERPRET=1`` was set before Triton was imported (Triton's interpreter).
    """
    choice = os.environ.get("SOFTPOOL3D_BACKEND", "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"SOFTPOOL3D_BACKEND={choice!r} is not one of {', '.join(BACKENDS)}")
    if choice == "reference":
        return "reference"
    if choice == "triton":
        if not _triton_available():
            raise RuntimeError("SOFTPOOL3D_BACKEND=triton but Triton is not installed")
        if x.device.type != "cuda" and not (x.device.type == "cpu" and _interpreting()):
            raise ValueError(
                f"SOFTPOOL3D_BACKEND=triton cannot serve a tensor on {x.device}; "
                "for CPU tensors set TRITON_INTERPRET=1 before Triton is imported"
            )
        return "triton"
    cpp_ok = x.device.type == "cpu" and x.dtype in FLOAT_DTYPES
    if choice == "cpp":
        if not cpp_ok:
            raise ValueError(f"SOFTPOOL3D_BACKEND=cpp cannot serve a {x.dtype} tensor on {x.device}")
        if not cpu.load():
            raise RuntimeError("SOFTPOOL3D_BACKEND=cpp but the C++ CPU kernel could not be built")
        return "cpp"
    if x.device.type == "cuda":
        if _triton_available():
            return "triton"
        _warn_no_triton()
    return "cpp" if cpp_ok and cpu.load() else "reference"


@functools.cache
def _warn_no_triton() -> None:
    warnings.warn(
        "softpool3d: Triton is not installed, so SoftPool on CUDA tensors runs the pure-PyTorch reference, "
        "which gathers every window and needs about kernel-volume times the input's memory (27x for 3x3x3) "
        "and is far slower; pip install triton to get the GPU kernels.",
        RuntimeWarning,
        stacklevel=4,
    )


def _gpu():
    # Imported on first use: Triton reads TRITON_INTERPRET when the kernels are defined.
    from . import gpu  # noqa: PLC0415

    return gpu


def _forward(x: Tensor, windows: Windows) -> Tensor:
    backend = backend_for(x)
    if backend == "cpp":
        return cpu.forward(x, flat_windows(windows))
    if backend == "triton":
        return _gpu().forward(x, windows)
    return reference.forward(x, windows)


def _backward(grad: Tensor, x: Tensor, windows: Windows) -> Tensor:
    backend = backend_for(x)
    if backend == "cpp":
        return cpu.backward(grad, x, flat_windows(windows))
    if backend == "triton":
        return _gpu().backward(grad, x, windows)
    return reference.backward(grad, x, windows)


def _empty_output(x: Tensor, spatial_out) -> Tensor:
    shape = (*x.shape[:2], *spatial_out)
    return x.new_empty(shape).contiguous(memory_format=output_memory_format(x))


def _empty_like_input(x: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=output_memory_format(x))


# ---------------------------------------------------------------- regular windows


@torch.library.custom_op("softpool3d::soft_pool", mutates_args=())
def soft_pool(x: Tensor, kernel_size: list[int], stride: list[int], padding: list[int], ceil_mode: bool) -> Tensor:
    return _forward(x, pool_windows(x.shape[2:], kernel_size, stride, padding, ceil_mode))


@soft_pool.register_fake
def _(x, kernel_size, stride, padding, ceil_mode):
    sizes = zip(x.shape[2:], kernel_size, stride, padding)
    return _empty_output(x, [pool_output_size(n, k, s, p, ceil_mode) for n, k, s, p in sizes])


@torch.library.custom_op("softpool3d::soft_pool_backward", mutates_args=())
def soft_pool_backward(
    grad: Tensor, x: Tensor, kernel_size: list[int], stride: list[int], padding: list[int], ceil_mode: bool,
) -> Tensor:
    return _backward(grad, x, pool_windows(x.shape[2:], kernel_size, stride, padding, ceil_mode))


@soft_pool_backward.register_fake
def _(grad, x, kernel_size, stride, padding, ceil_mode):
    return _empty_like_input(x)


def _setup_pool(ctx, inputs, output):
    x, kernel_size, stride, padding, ceil_mode = inputs
    ctx.save_for_backward(x)
    ctx.geometry = (kernel_size, stride, padding, ceil_mode)


def _pool_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return soft_pool_backward(grad, x, *ctx.geometry), None, None, None, None


soft_pool.register_autograd(_pool_grad, setup_context=_setup_pool)


# ---------------------------------------------------------------- adaptive windows


@torch.library.custom_op("softpool3d::adaptive_soft_pool", mutates_args=())
def adaptive_soft_pool(x: Tensor, output_size: list[int]) -> Tensor:
    return _forward(x, adaptive_windows(x.shape[2:], output_size))


@adaptive_soft_pool.register_fake
def _(x, output_size):
    return _empty_output(x, output_size)


@torch.library.custom_op("softpool3d::adaptive_soft_pool_backward", mutates_args=())
def adaptive_soft_pool_backward(grad: Tensor, x: Tensor, output_size: list[int]) -> Tensor:
    return _backward(grad, x, adaptive_windows(x.shape[2:], output_size))


@adaptive_soft_pool_backward.register_fake
def _(grad, x, output_size):
    return _empty_like_input(x)


def _setup_adaptive(ctx, inputs, output):
    x, output_size = inputs
    ctx.save_for_backward(x)
    ctx.output_size = output_size


def _adaptive_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return adaptive_soft_pool_backward(grad, x, ctx.output_size), None


adaptive_soft_pool.register_autograd(_adaptive_grad, setup_context=_setup_adaptive)
