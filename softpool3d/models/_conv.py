"""``Conv3d``: ``nn.Conv3d`` with a faster weight gradient on the CPU for layers with few output positions.

PyTorch's CPU convolution (oneDNN) computes the weight gradient of a 3D convolution slowly when the
output has few positions for the size of the weight, which is every deep layer of a network trained on
short, small clips: r3d_10 on 8x64x64 clips sees 1x2x2 positions per clip in its last stage, and there
the weight gradient took 48 ms against 3 ms for the input gradient (batch 8, 2 threads). Written as one
matrix product ``grad (Cout x M) @ rows (M x Cin * taps)`` over the M = N * T' * H' * W' output
positions, where ``rows`` gathers what each kernel tap sees, it takes about 8 ms; a whole r3d_10
training step goes from 324 to 266 ms (``tools/benchmark_models.py --conv-gradient``). ``Conv3d``
takes that path when the weight has at least ``TAP_GRADIENT_RATIO`` elements per output position;
everything else (the forward, the input and bias gradients, other devices, groups, autocast, compiling
and export) is ``nn.Conv3d``'s own. Parameters, state_dict keys and ``isinstance(m, nn.Conv3d)`` are
unchanged.

Every other autograd feature is ``nn.Conv3d``'s too: under ``torch.func`` transforms (``grad``,
``vmap``, ``jvp``, ``functional_call`` inside them) and when an input carries a forward-mode tangent,
the forward is plain ``F.conv3d``; a backward that builds a graph (``create_graph=True``, double
backward), runs under a transform or gets a gradient with a tangent computes all three gradients with
PyTorch's own differentiable ``convolution_backward``. A parametrised weight (``spectral_norm``...) is
computed once per forward, as in ``nn.Conv3d``, and keeps the fast path.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from torch import Tensor, nn

# Weight elements per output position from which the gathered product beats oneDNN's weight gradient. On
# r3d_10/r3d_18 layers at 8x64x64 and 16x112x112, batch 8, a training step of the layer took 1.25x
# nn.Conv3d's time at 1,128 elements per position, 0.87x at 2,257 and 0.3-0.9x above.
TAP_GRADIENT_RATIO = 2048
# The most memory the gathered input rows of one product take.
_ROWS_BYTES = 64 << 20


def output_positions(input_shape: torch.Size, kernel: tuple[int, ...], stride: tuple[int, ...],
                     padding: tuple[int, ...], dilation: tuple[int, ...]) -> int:
    """N * T' * H' * W' of a 3D convolution's output for an (N, C, T, H, W) input."""
    positions = input_shape[0]
    for size, k, s, p, d in zip(input_shape[2:], kernel, stride, padding, dilation):
        positions *= max((size + 2 * p - d * (k - 1) - 1) // s + 1, 0)
    return positions


def tap_weight_grad(grad: Tensor, x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
                    padding: tuple[int, ...], dilation: tuple[int, ...]) -> Tensor:
    """The weight gradient of ``conv3d(x, w, stride, padding, dilation)`` (groups 1) as matrix products.

    The input values each tap sees are gathered into rows (Cin * taps, M), then
    ``grad_w = grad (Cout, M) @ rows.T``, a few input channels at a time so that the rows stay under
    ``_ROWS_BYTES``.

    Args:
        grad: (N, Cout, T', H', W'), the gradient of the output.
        x: (N, Cin, T, H, W), the input.
    Returns (Cout, Cin, kT, kH, kW).
    """
    (n, cout, *out), cin = grad.shape, x.shape[1]
    taps = kernel[0] * kernel[1] * kernel[2]
    grad_rows = grad.transpose(0, 1).reshape(cout, -1)                        # (Cout, M), M in (n, t, h, w) order
    padded = F.pad(x, [p for p in reversed(padding) for _ in range(2)]).contiguous()
    sn, sc, st, sh, sw = padded.stride()
    # (N, Cin, kT, kH, kW, T', H', W'): what tap (a, b, c) sees at output position (t, h, w), as a view.
    seen = padded.as_strided(
        (n, cin, *kernel, *out),
        (sn, sc, dilation[0] * st, dilation[1] * sh, dilation[2] * sw, stride[0] * st, stride[1] * sh, stride[2] * sw))
    weight_grad = grad.new_empty((cout, cin * taps))
    step = max(1, _ROWS_BYTES // max(taps * grad_rows.shape[1] * grad.element_size(), 1))
    for c0 in range(0, cin, step):
        c1 = min(cin, c0 + step)
        rows = seen[:, c0:c1].permute(1, 2, 3, 4, 0, 5, 6, 7).reshape((c1 - c0) * taps, -1)   # (Cin' * taps, M)
        weight_grad[:, c0 * taps:c1 * taps] = grad_rows @ rows.T
    return weight_grad.view(cout, cin, *kernel)


def _plain_autograd(*tensors: Tensor | None) -> bool:
    """True when no ``torch.func`` transform is running (the check ``autograd.Function.apply`` makes itself)
    and none of ``tensors`` carries a forward-mode tangent."""
    return not torch._C._are_functorch_transforms_active() and all(
        t is None or forward_ad.unpack_dual(t).tangent is None for t in tensors)


class _TapGradientConv3d(torch.autograd.Function):
    """conv3d whose backward takes the input and bias gradients from PyTorch and the weight gradient from
    ``tap_weight_grad``; a backward that must itself be differentiable, batched or forward-differentiated
    is PyTorch's own for all three."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias, stride, padding, dilation) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation)
        ctx.has_bias = bias is not None
        return F.conv3d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        # Grad mode is on here exactly when the caller asked for create_graph (a double backward).
        tap = need_w and not torch.is_grad_enabled() and _plain_autograd(grad)
        grad_x = grad_w = grad_b = None
        if need_x or need_b or (need_w and not tap):
            grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, stride, padding, dilation,
                False, [0, 0, 0], 1, [need_x, need_w and not tap, need_b])
        if tap:
            grad_w = tap_weight_grad(grad, x, weight.shape[2:], stride, padding, dilation)
        return grad_x, grad_w, grad_b, None, None, None


def _tracing() -> bool:
    compiler = torch.compiler
    return compiler.is_compiling() or (hasattr(compiler, "is_exporting") and compiler.is_exporting())


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same arguments, parameters and state_dict) that trains faster on the CPU where the
    output has few positions for the size of the weight (see the module docstring).

    Shapes as ``nn.Conv3d``: (N, Cin, T, H, W) -> (N, Cout, T', H', W').
    """

    def uses_tap_gradient(self, x: Tensor) -> bool:
        """True when a forward on ``x`` now would compute its weight gradient with ``tap_weight_grad``
        (unless its backward is asked to build a graph). Reads ``self.weight`` and ``self.bias`` once, which
        runs their parametrisations if they have any."""
        return self._takes_tap_path(x, self.weight, self.bias)

    def _takes_tap_path(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
        return (x.device.type == "cpu" and x.dim() == 5 and self.groups == 1 and self.padding_mode == "zeros"
                and isinstance(self.padding, tuple) and weight.requires_grad and torch.is_grad_enabled()
                and x.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled("cpu")
                and not _tracing()
                and weight.numel() >= TAP_GRADIENT_RATIO * output_positions(
                    x.shape, self.kernel_size, self.stride, self.padding, self.dilation)
                and _plain_autograd(x, weight, bias))

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # nn.Conv3d.forward reads self.weight and self.bias once and passes them here: decide on those, so
        # that a parametrised weight is computed once per forward, as in nn.Conv3d.
        if self._takes_tap_path(x, weight, bias):
            return _TapGradientConv3d.apply(x, weight, bias, self.stride, self.padding, self.dilation)
        return super()._conv_forward(x, weight, bias)
