"""Pure-PyTorch SoftPool: the test oracle and the fallback for any device and dtype.

Every window is gathered into a trailing dim of size K (its largest size);
positions outside the window (padding, shorter adaptive windows) hold -inf and
so get weight 0. Then, per window::

    m = max_i x_i,  w = softmax(x),  y = sum_i w_i * x_i
    dL/dx_i = g * w_i * (1 + x_i - y)

``forward`` is differentiable by autograd (the exact gradient for finite
input); ``backward`` is the closed form that the op's autograd uses; it recomputes y from x.
``backward_grads`` differentiates ``backward`` itself (double backward, Hessian-vector products)::

    a_i = 1 + x_i - y,  dx_i = g * w_i * a_i   (summed over the windows that hold i)
    given v = dL/d(dx):  dL/dg = sum_i v_i w_i a_i
                         dL/dx_j = g * w_j * (v_j (a_j + 1) - sum_i v_i w_i a_i - a_j sum_i v_i w_i)

It is made of differentiable torch ops, so higher orders follow by autograd.
Non-finite rules: a NaN in a window gives NaN, +inf gives +inf (its gradient
is shared by the +inf entries), -inf entries get weight 0 and an all -inf
window gives -inf (and zero gradient).
"""

from __future__ import annotations

import torch

from ._geometry import AxisWindows, Windows, output_memory_format


def _axis_index(axis: AxisWindows, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.tensor(axis.starts, dtype=torch.long, device=device)
    ends = torch.tensor(axis.ends, dtype=torch.long, device=device)
    k = axis.window  # from the geometry, not the tensors: traceable (torch.compile of the double backward)
    index = starts[:, None] + torch.arange(k, device=device)[None, :]
    valid = index < ends[:, None]
    return index.clamp_(max=axis.length - 1), valid


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _gather(x: torch.Tensor, windows: Windows, fill: float = float("-inf")) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(N, C, *spatial) -> windows (N, C, *out, K) with ``fill`` where no input is, and the index tables."""
    dims = len(windows)
    tables = [_axis_index(axis, x.device) for axis in windows]
    xw = x
    for i, (index, _) in enumerate(tables):
        dim = 2 + 2 * i  # each earlier axis has become two dims (out, k)
        xw = xw.index_select(dim, index.reshape(-1)).unflatten(dim, index.shape)
    # (N, C, o1, k1, o2, k2, ...) -> (N, C, o1, o2, ..., k1, k2, ...)
    order = [0, 1] + [2 + 2 * i for i in range(dims)] + [3 + 2 * i for i in range(dims)]
    xw = xw.permute(order).flatten(2 + dims)
    valid = _outer_valid([v for _, v in tables])
    xw = xw.masked_fill(~valid, fill)
    return xw, valid, tables


def _outer_valid(valids: list[torch.Tensor]) -> torch.Tensor:
    """Per-axis (o_a, k_a) masks -> (o1, o2, ..., k1*k2*...) mask."""
    dims = len(valids)
    mask = None
    for i, v in enumerate(valids):
        shape = [v.shape[0] if j == i else 1 for j in range(dims)] + [v.shape[1] if j == i else 1 for j in range(dims)]
        term = v.view(shape)
        mask = term if mask is None else mask & term
    return mask.flatten(dims)


def _softpool_windows(xw: torch.Tensor) -> torch.Tensor:
    m = xw.amax(-1)
    w = torch.softmax(xw, dim=-1)
    y = (w * xw.masked_fill(xw == float("-inf"), 0.0)).sum(-1)
    y = torch.where(m == float("inf"), m, y)
    return torch.where(m == float("-inf"), m, y)


def forward(x: torch.Tensor, windows: Windows) -> torch.Tensor:
    """SoftPool of x (N, C, *spatial) over ``windows``; returns (N, C, *out) in x's dtype."""
    xw, _, _ = _gather(x.to(_acc_dtype(x.dtype)), windows)
    y = _softpool_windows(xw).to(x.dtype)
    return y.contiguous(memory_format=output_memory_format(x))


def _scatter(gw: torch.Tensor, windows: Windows, tables: list) -> torch.Tensor:
    """Windows (N, C, *out, K) -> (N, C, *spatial), summing what each input position receives; undoes ``_gather``."""
    dims = len(windows)
    k_sizes = [index.shape[1] for index, _ in tables]
    gw = gw.unflatten(-1, k_sizes)  # (N, C, o1..od, k1..kd)
    order = [0, 1]
    for i in range(dims):
        order += [2 + i, 2 + dims + i]
    gw = gw.permute(order)  # (N, C, o1, k1, o2, k2, ...)
    for i in reversed(range(dims)):  # one axis at a time, last axis first
        dim = 2 + 2 * i
        index, _ = tables[i]
        flat = gw.flatten(dim, dim + 1)
        shape = list(flat.shape)
        shape[dim] = windows[i].length
        gw = flat.new_zeros(shape).index_add(dim, index.reshape(-1), flat)
    return gw


def _weights(xw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window (..., K): the softmax weights w and the window max m (..., 1); a non-finite max is not subtracted."""
    m = xw.amax(-1, keepdim=True).detach()  # only a shift: softmax does not depend on it
    safe_m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(xw - safe_m)
    return e / e.sum(-1, keepdim=True), m


def _coefficients(xw: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """d(dx_i)/dg per window entry, with the non-finite rules, and the (w, a = 1 + x - y) it is made of."""
    yv = _softpool_windows(xw)[..., None]
    w, m = _weights(xw)
    used = w > 0
    a = torch.where(used, 1 + xw - yv, torch.zeros_like(w))
    coef = torch.where(used, w * a, torch.zeros_like(w))
    # +inf windows: the gradient goes to the +inf entries, shared equally.
    is_inf = xw == float("inf")
    share = is_inf / is_inf.sum(-1, keepdim=True).clamp(min=1)
    coef = torch.where(m == float("inf"), share.to(coef.dtype), coef)
    coef = torch.where(m == float("-inf"), torch.zeros_like(coef), coef)
    coef = torch.where(torch.isnan(m), torch.full_like(coef, float("nan")), coef)
    return coef.masked_fill(~valid, 0.0), torch.where(used, w, torch.zeros_like(w)), a


def backward(grad: torch.Tensor, x: torch.Tensor, windows: Windows) -> torch.Tensor:
    """Exact gradient dL/dx (N, C, *spatial) from dL/dy (N, C, *out) and x (y is recomputed)."""
    acc = _acc_dtype(x.dtype)
    xw, valid, tables = _gather(x.to(acc), windows)
    yv = _softpool_windows(xw)[..., None]
    g = grad.to(acc)[..., None]
    w, m = _weights(xw)
    gw = torch.where(w > 0, g * w * (1 + xw - yv), torch.zeros_like(w))
    # +inf windows: the gradient goes to the +inf entries, shared equally.
    is_inf = xw == float("inf")
    share = is_inf / is_inf.sum(-1, keepdim=True).clamp(min=1)
    gw = torch.where(m == float("inf"), g * share, gw)
    gw = torch.where(m == float("-inf"), torch.zeros_like(gw), gw)
    gw = torch.where(torch.isnan(m), torch.full_like(gw, float("nan")), gw)
    gw = gw.masked_fill(~valid, 0.0)
    return _scatter(gw, windows, tables).to(x.dtype).contiguous(memory_format=output_memory_format(x))


def backward_grads(grad_dx: torch.Tensor, grad: torch.Tensor, x: torch.Tensor,
                   windows: Windows) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiate ``backward(grad, x)``: given dL/d(dx) (N, C, *spatial), return (dL/dgrad (N, C, *out),
    dL/dx (N, C, *spatial)). Windows whose max is +-inf contribute nothing to dL/dx (their dx is constant in x),
    NaN windows give NaN."""
    acc = _acc_dtype(x.dtype)
    xw, valid, tables = _gather(x.to(acc), windows)
    vw, _, _ = _gather(grad_dx.to(acc), windows, fill=0.0)
    coef, w, a = _coefficients(xw, valid)
    g = grad.to(acc)[..., None]
    along_coef = (vw * coef).sum(-1, keepdim=True)      # sum_i v_i w_i a_i: also dL/dgrad
    along_w = (vw * w).sum(-1, keepdim=True)            # sum_i v_i w_i
    gw = g * w * (vw * (a + 1) - along_coef - a * along_w)
    m = xw.amax(-1, keepdim=True)
    gw = torch.where(torch.isfinite(m), gw, torch.zeros_like(gw))
    gw = torch.where(torch.isnan(m), torch.full_like(gw, float("nan")), gw).masked_fill(~valid, 0.0)
    grad_grad = along_coef.squeeze(-1).to(grad.dtype).contiguous(memory_format=output_memory_format(grad))
    grad_x = _scatter(gw, windows, tables).to(x.dtype).contiguous(memory_format=output_memory_format(x))
    return grad_grad, grad_x
