"""The op is a proper torch.library custom op: opcheck passes and torch.compile(fullgraph=True)
traces it with no graph break, forward and backward."""

import pytest
import torch

import softpool3d as sp


@pytest.mark.parametrize("args", [
    lambda: (torch.randn(2, 3, 5, 6, 7), [3, 3, 3], [2, 2, 2], [1, 1, 1], True),
    lambda: (torch.randn(2, 4, 6, 6), [2, 2], [2, 2], [0, 0], False),
    lambda: (torch.randn(2, 4, 9), [3], [1], [1], False),
    lambda: (torch.randn(2, 5, 4, 6, 6).contiguous(memory_format=torch.channels_last_3d), [2, 2, 2], [2, 2, 2],
             [0, 0, 0], False),
])
def test_opcheck_soft_pool(seed, args):
    x, *rest = args()
    x.requires_grad_(True)
    torch.library.opcheck(torch.ops.softpool3d.soft_pool.default, (x, *rest))


@pytest.mark.parametrize("shape,out", [((2, 3, 5, 6, 7), [2, 3, 1]), ((2, 3, 7, 9), [1, 1]), ((1, 2, 10), [3])])
def test_opcheck_adaptive(seed, shape, out):
    x = torch.randn(shape, requires_grad=True)
    torch.library.opcheck(torch.ops.softpool3d.adaptive_soft_pool.default, (x, out))


def test_opcheck_backward_ops(seed):
    x = torch.randn(2, 3, 5, 6, 7)
    y = sp.soft_pool3d(x, 3, 2, 1)
    torch.library.opcheck(torch.ops.softpool3d.soft_pool_backward.default,
                          (torch.randn_like(y), x, [3, 3, 3], [2, 2, 2], [1, 1, 1], False))
    ya = sp.adaptive_soft_pool3d(x, 2)
    torch.library.opcheck(torch.ops.softpool3d.adaptive_soft_pool_backward.default,
                          (torch.randn_like(ya), x, [2, 2, 2]))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 8, 3, padding=1)
        self.pool = sp.SoftPool3d(3, 2, 1)
        self.head = sp.AdaptiveSoftPool3d(1)

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.conv(x)))).flatten(1)


def test_torch_compile_fullgraph_forward_and_backward(seed):
    torch._dynamo.reset()
    model = Net()
    x = torch.randn(2, 3, 6, 10, 10)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for got, expected in zip(compiled_grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0
