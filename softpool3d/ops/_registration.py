"""The one place where SoftPool becomes ``torch.library`` custom ops, and where each device gets its kernel.

Four ops live in the ``softpool3d`` namespace:

- ``soft_pool(x, kernel_size, stride, padding, ceil_mode)`` and
  ``adaptive_soft_pool(x, output_size)``, differentiable;
- their ``*_backward`` ops, which recompute the weights and ``y`` from the
  saved input. Only the input is saved, so in-place ops on the output (``relu_``,
  ``Dropout(inplace=True)``) are safe, and a pool keeps less memory for
  backward than max pooling, which also keeps int64 indices. The backward ops
  are differentiable too (double backward, gradient penalties, Hessian-vector
  products): their derivatives are ``reference.backward_grads``, plain torch ops on
  every device, which gather every window (about kernel-volume times the input's memory).

Each op is declared once; PyTorch's dispatcher picks the kernel by device: ``register_kernel("cpu")``
is the C++ kernel (``cpp.py``), ``register_kernel("cuda")`` the Triton kernels (``triton.py``), and
the op's own body, which serves any other device, the PyTorch reference (``reference.py``). Every
backend gets the same geometry, a tuple of ``AxisWindows``. Fake (meta) implementations let
``torch.compile(fullgraph=True)`` trace the ops and ``torch.library.opcheck`` pass.

Fallbacks: a CPU whose C++ build failed, or a CUDA tensor without Triton, gets the reference with one
warning. ``SOFTPOOL3D_BACKEND`` (``auto``, ``cpp``, ``triton`` or ``reference``), read once at import,
overrides the choice for debugging; ``force_backend(name)`` does the same for a block of code.
``triton`` serves CPU tensors only under Triton's interpreter (``TRITON_INTERPRET=1`` set before
Triton is imported).
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import Callable, Iterator

import torch
from torch import Tensor
from torch.autograd import forward_ad

from . import cpp, reference
from ._geometry import FLOAT_DTYPES, Windows, adaptive_windows, output_memory_format, pool_output_size, pool_windows

BACKENDS = ("auto", "cpp", "triton", "reference")


def _checked_backend(name: str, source: str) -> str:
    name = name.strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"{source}={name!r} is not one of {', '.join(BACKENDS)}")
    return name


_override = _checked_backend(os.environ.get("SOFTPOOL3D_BACKEND", "auto"), "SOFTPOOL3D_BACKEND")


@contextlib.contextmanager
def force_backend(name: str) -> Iterator[None]:
    """Within the block, serve every SoftPool call with backend ``name`` (tests, benchmarks, debugging)."""
    global _override
    previous, _override = _override, _checked_backend(name, "force_backend")
    try:
        yield
    finally:
        _override = previous


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip() == "1"


@functools.cache
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


@functools.cache
def _warn_no_triton() -> None:
    warnings.warn(
        "softpool3d: Triton is not installed, so SoftPool on CUDA tensors runs the pure-PyTorch reference, "
        "which gathers every window and needs about kernel-volume times the input's memory (27x for 3x3x3) "
        "and is far slower; pip install triton to get the GPU kernels.",
        RuntimeWarning,
        stacklevel=4,
    )


def _cpu_backend(x: Tensor) -> str:
    if _override == "reference":
        return "reference"
    if _override == "triton":
        if not (_triton_available() and _interpreting()):
            raise ValueError("SOFTPOOL3D_BACKEND=triton cannot serve a CPU tensor unless Triton is installed and "
                             "TRITON_INTERPRET=1 was set before Triton was imported")
        return "triton"
    if x.dtype in FLOAT_DTYPES and cpp.load():
        return "cpp"
    if _override == "cpp":
        raise RuntimeError("SOFTPOOL3D_BACKEND=cpp but the C++ CPU kernel could not be built")
    return "reference"


def _cuda_backend(x: Tensor) -> str:
    if _override == "reference":
        return "reference"
    if _override == "cpp":
        raise ValueError(f"SOFTPOOL3D_BACKEND=cpp cannot serve a tensor on {x.device}")
    if _triton_available():
        return "triton"
    if _override == "triton":
        raise RuntimeError("SOFTPOOL3D_BACKEND=triton but Triton is not installed")
    _warn_no_triton()
    return "reference"


def backend_for(x: Tensor) -> str:
    """Name the implementation that serves ``x``: ``"cpp"``, ``"triton"`` or ``"reference"``."""
    if x.device.type == "cpu":
        return _cpu_backend(x)
    if x.device.type == "cuda":
        return _cuda_backend(x)
    if _override in ("cpp", "triton"):
        raise ValueError(f"SOFTPOOL3D_BACKEND={_override} cannot serve a tensor on {x.device}")
    return "reference"


def _implementation(name: str):
    if name == "triton":
        from . import triton  # noqa: PLC0415 - imported on first use: Triton reads TRITON_INTERPRET then

        return triton
    return cpp if name == "cpp" else reference


def _per_device(op, kernel: Callable) -> None:
    """Register ``kernel(choose, *args)`` as the op's CPU and CUDA kernels, ``choose`` naming the backend."""
    op.register_kernel("cpu")(functools.partial(kernel, _cpu_backend))
    op.register_kernel("cuda")(functools.partial(kernel, _cuda_backend))


def _empty_output(x: Tensor, spatial_out) -> Tensor:
    shape = (*x.shape[:2], *spatial_out)
    return x.new_empty(shape).contiguous(memory_format=output_memory_format(x))


def _empty_like_input(x: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=output_memory_format(x))


def _refuse_forward_mode(*tensors: Tensor) -> None:
    """torch.library ops have no forward-mode formula: refuse tangents rather than drop them (silent zeros)."""
    if forward_ad._current_level < 0:
        return
    if any(forward_ad.unpack_dual(t).tangent is not None for t in tensors):
        raise NotImplementedError(
            "softpool3d: SoftPool has no forward-mode AD (torch.autograd.forward_ad dual tensors); "
            "use reverse mode (torch.autograd.grad, double backward for Hessian-vector products)")


def _forward(choose: Callable, x: Tensor, windows: Windows) -> Tensor:
    _refuse_forward_mode(x)
    return _implementation(choose(x)).forward(x, windows)


def _backward(choose: Callable, grad: Tensor, x: Tensor, windows: Windows) -> Tensor:
    _refuse_forward_mode(grad, x)
    return _implementation(choose(x)).backward(grad, x, windows)


# ---------------------------------------------------------------- regular windows


@torch.library.custom_op("softpool3d::soft_pool", mutates_args=())
def soft_pool(x: Tensor, kernel_size: list[int], stride: list[int], padding: list[int], ceil_mode: bool) -> Tensor:
    return reference.forward(x, pool_windows(x.shape[2:], kernel_size, stride, padding, ceil_mode))


@soft_pool.register_fake
def _(x, kernel_size, stride, padding, ceil_mode):
    sizes = zip(x.shape[2:], kernel_size, stride, padding)
    return _empty_output(x, [pool_output_size(n, k, s, p, ceil_mode) for n, k, s, p in sizes])


@torch.library.custom_op("softpool3d::soft_pool_backward", mutates_args=())
def soft_pool_backward(
    grad: Tensor, x: Tensor, kernel_size: list[int], stride: list[int], padding: list[int], ceil_mode: bool,
) -> Tensor:
    return reference.backward(grad, x, pool_windows(x.shape[2:], kernel_size, stride, padding, ceil_mode))


@soft_pool_backward.register_fake
def _(grad, x, kernel_size, stride, padding, ceil_mode):
    return _empty_like_input(x)


_per_device(soft_pool, lambda choose, x, k, s, p, c: _forward(choose, x, pool_windows(x.shape[2:], k, s, p, c)))
_per_device(soft_pool_backward,
            lambda choose, g, x, k, s, p, c: _backward(choose, g, x, pool_windows(x.shape[2:], k, s, p, c)))


def _setup_pool(ctx, inputs, output):
    x, kernel_size, stride, padding, ceil_mode = inputs
    ctx.save_for_backward(x)
    ctx.geometry = (kernel_size, stride, padding, ceil_mode)


def _pool_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return soft_pool_backward(grad, x, *ctx.geometry), None, None, None, None


soft_pool.register_autograd(_pool_grad, setup_context=_setup_pool)


def _setup_pool_backward(ctx, inputs, output):
    grad, x, kernel_size, stride, padding, ceil_mode = inputs
    ctx.save_for_backward(grad, x)
    ctx.geometry = (kernel_size, stride, padding, ceil_mode)


def _pool_backward_grad(ctx, grad_dx):
    grad, x = ctx.saved_tensors
    windows = pool_windows(x.shape[2:], *ctx.geometry)
    grad_grad, grad_x = reference.backward_grads(grad_dx, grad, x, windows)
    return grad_grad, grad_x, None, None, None, None


soft_pool_backward.register_autograd(_pool_backward_grad, setup_context=_setup_pool_backward)


# ---------------------------------------------------------------- adaptive windows


@torch.library.custom_op("softpool3d::adaptive_soft_pool", mutates_args=())
def adaptive_soft_pool(x: Tensor, output_size: list[int]) -> Tensor:
    return reference.forward(x, adaptive_windows(x.shape[2:], output_size))


@adaptive_soft_pool.register_fake
def _(x, output_size):
    return _empty_output(x, output_size)


@torch.library.custom_op("softpool3d::adaptive_soft_pool_backward", mutates_args=())
def adaptive_soft_pool_backward(grad: Tensor, x: Tensor, output_size: list[int]) -> Tensor:
    return reference.backward(grad, x, adaptive_windows(x.shape[2:], output_size))


@adaptive_soft_pool_backward.register_fake
def _(grad, x, output_size):
    return _empty_like_input(x)


_per_device(adaptive_soft_pool, lambda choose, x, size: _forward(choose, x, adaptive_windows(x.shape[2:], size)))
_per_device(adaptive_soft_pool_backward,
            lambda choose, g, x, size: _backward(choose, g, x, adaptive_windows(x.shape[2:], size)))


def _setup_adaptive(ctx, inputs, output):
    x, output_size = inputs
    ctx.save_for_backward(x)
    ctx.output_size = output_size


def _adaptive_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return adaptive_soft_pool_backward(grad, x, ctx.output_size), None


adaptive_soft_pool.register_autograd(_adaptive_grad, setup_context=_setup_adaptive)


def _setup_adaptive_backward(ctx, inputs, output):
    grad, x, output_size = inputs
    ctx.save_for_backward(grad, x)
    ctx.output_size = output_size


def _adaptive_backward_grad(ctx, grad_dx):
    grad, x = ctx.saved_tensors
    windows = adaptive_windows(x.shape[2:], ctx.output_size)
    grad_grad, grad_x = reference.backward_grads(grad_dx, grad, x, windows)
    return grad_grad, grad_x, None


adaptive_soft_pool_backward.register_autograd(_adaptive_backward_grad, setup_context=_setup_adaptive_backward)
