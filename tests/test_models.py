"""Model builders: shapes at two clip sizes, gradients, where SoftPool is, layouts, parameter counts."""

import pytest
import torch
import torchvision
from torch import nn

from softpool3d import AdaptiveSoftPool3d, SoftPool3d
from softpool3d.models import build_model, list_models

# R(2+1)D, MC3, torchvision's R3D-18, Swin3D and X3D have no pooling layer outside the head.
HAS_POOLS = {"r3d_10", "r3d_18", "r3d_34", "r3d_50", "r3d_101", "r3d_152", "r3d_200", "i3d_r50", "c3d", "s3d",
             "mvit_v1_b", "mvit_v2_s"}
CLIPS = [(6, 32, 32), (8, 24, 40)]   # small, and not the models' native sizes
# MViT takes only 16x224x224 clips (tests/test_pretrained.py runs it there); the larger ResNets and Swin3Ds
# are the same code as r3d_101 and swin3d_t with more blocks, left out of the clip tests to keep them fast.
ON_SMALL_CLIPS = [name for name in list_models("video")
                  if name not in {"mvit_v1_b", "mvit_v2_s", "r3d_152", "r3d_200", "swin3d_s", "swin3d_b"}]


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("name", ON_SMALL_CLIPS)
def test_every_model_builds_runs_and_trains(seed, name):
    model = build_model(name, num_classes=5, pool="soft", head_pool="soft")
    for module in model.modules():   # Swin3D's stochastic depth may skip a whole block, leaving it no gradient
        if isinstance(module, torchvision.ops.StochasticDepth):
            module.p = 0.0
    assert count(model, AdaptiveSoftPool3d) == 1
    assert (count(model, SoftPool3d) > 0) == (name in HAS_POOLS)
    for clip in CLIPS:
        out = model(torch.randn(2, 3, *clip))   # batch 2: BatchNorm in training mode needs more than one value
        assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.parametrize("name", ON_SMALL_CLIPS)
def test_max_variant_has_no_softpool_and_channels_last_agrees(seed, name):
    model = build_model(name, num_classes=3, pool="max", head_pool="avg").eval()
    assert count(model, SoftPool3d) == count(model, AdaptiveSoftPool3d) == 0
    soft = build_model(name, num_classes=3, pool="soft").eval()
    x = torch.randn(1, 3, *CLIPS[0])
    with torch.no_grad():
        expected = soft(x)
        soft_cl = soft.to(memory_format=torch.channels_last_3d)
        got = soft_cl(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(HAS_POOLS & set(ON_SMALL_CLIPS)))
def test_avg_variant_runs_on_short_clips(seed, name):
    # C3D's pool5 sees one frame on 6- and 8-frame clips; PyTorch's avg_pool3d alone refuses that.
    model = build_model(name, num_classes=3, pool="avg", head_pool="avg").eval()
    with torch.no_grad():
        for clip in [*CLIPS, (8, 32, 32)]:
            assert torch.isfinite(model(torch.randn(1, 3, *clip))).all()


@pytest.mark.parametrize("kernel, stride, padding, size", [
    ((2, 2, 2), (2, 2, 2), (0, 1, 1), (1, 2, 3)),      # shorter than the kernel in time
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 5)),
    ((2, 3, 3), (1, 2, 2), (0, 1, 1), (5, 7, 6)),      # large enough: PyTorch's own path
])
def test_avg_pool_matches_window_means(seed, kernel, stride, padding, size):
    from softpool3d.models._pooling import CountValidAvgPool3d
    from softpool3d.ops._geometry import pool_windows

    x = torch.randn(2, 3, *size, dtype=torch.float64)
    got = CountValidAvgPool3d(kernel, stride, padding, ceil_mode=True)(x)
    axes = pool_windows(size, kernel, stride, padding, True)
    assert got.shape[2:] == tuple(len(a.starts) for a in axes)
    for t, (t0, t1) in enumerate(zip(axes[0].starts, axes[0].ends)):
        for h, (h0, h1) in enumerate(zip(axes[1].starts, axes[1].ends)):
            for w, (w0, w1) in enumerate(zip(axes[2].starts, axes[2].ends)):
                expected = x[:, :, t0:t1, h0:h1, w0:w1].mean(dim=(2, 3, 4))
                torch.testing.assert_close(got[:, :, t, h, w], expected)


def test_parameter_counts():
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # torchvision's R3D-18 has 33,371,472; Hara's 7x7x7 stem adds 3*64*(343-147) = 37,632.
    assert params(build_model("r3d_18", num_classes=400)) == pytest.approx(33.4e6, rel=0.03)
    assert params(build_model("r3d_18", num_classes=400)) == 33_371_472 + 37_632
    # Hara et al. list ResNet-10 at 14.4M.
    assert params(build_model("r3d_10", num_classes=400)) == pytest.approx(14.4e6, rel=0.03)
    # X3D-M: about 3.8M (Feichtenhofer, 2020); XS and S share its network.
    assert params(build_model("x3d_m", num_classes=400)) == pytest.approx(3.8e6, rel=0.03)
    # Tran et al.'s C3D with fc6/fc7 at 4096 and 101 classes: about 78M.
    assert params(build_model("c3d", num_classes=101)) == pytest.approx(78e6, rel=0.03)
    # torchvision's published counts.
    assert params(build_model("r2plus1d_18", num_classes=400)) == 31_505_325
    assert params(build_model("mc3_18", num_classes=400)) == 11_695_440
    assert params(build_model("tv_r3d_18", num_classes=400)) == 33_371_472
    assert params(build_model("s3d", num_classes=400)) == 8_320_048
    assert params(build_model("mvit_v2_s", num_classes=400)) == 34_537_744
    assert params(build_model("swin3d_t", num_classes=400)) == 28_158_070


def test_i3d_pools_where_the_recipe_says():
    model = build_model("i3d_r50", num_classes=4)
    assert (model.pool1.kernel_size, model.pool1.stride) == ((1, 3, 3), (1, 2, 2))
    assert (model.pool2.kernel_size, model.pool2.stride) == ((2, 1, 1), (2, 1, 1))
    assert [b.body[0].kernel_size[0] for b in model.res3] == [3, 1, 3, 1]
    params = sum(p.numel() for p in model.parameters())
    assert 26e6 < params < 30e6, params    # ResNet-50's 25.6M plus the temporal kernels


def test_torchvision_state_dicts_load():
    for name, tv in (("r2plus1d_18", torchvision.models.video.r2plus1d_18),
                     ("mc3_18", torchvision.models.video.mc3_18)):
        build_model(name, num_classes=400, head_pool="soft").load_state_dict(tv().state_dict(), strict=True)


def test_torch_compile_r3d_18(seed):
    torch._dynamo.reset()
    model = build_model("r3d_18", num_classes=4).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x), rtol=1e-4, atol=1e-4)


def test_bad_names_and_arguments():
    with pytest.raises(ValueError, match="unknown model 'r4d'; choose from .*r3d_18"):
        build_model("r4d")
    with pytest.raises(ValueError, match=r"pool must be one of \('soft', 'max', 'avg'\)"):
        build_model("r3d_18", pool="min")
    with pytest.raises(ValueError, match="head_pool must be one of"):
        build_model("mc3_18", head_pool="median")
    with pytest.raises(TypeError, match="r3d_18: .*takes num_classes, pool, head_pool and dropout"):
        build_model("r3d_18", depth=3)
    assert isinstance(build_model("r2plus1d_18", num_classes=2, dropout=0.5).fc[0], nn.Dropout)


def test_the_two_r3d_18s_are_told_apart():
    hara, torchvision_r3d = build_model("r3d_18", num_classes=4), build_model("tv_r3d_18", num_classes=4)
    assert hara.stem[0].kernel_size == (7, 7, 7) and isinstance(hara.pool, SoftPool3d)
    assert torchvision_r3d.stem[0].kernel_size == (3, 7, 7) and count(torchvision_r3d, SoftPool3d) == 0
    from softpool3d.models import MODELS

    assert "tv_r3d_18" in MODELS["r3d_18"].__doc__ and "Hara" in MODELS["tv_r3d_18"].__doc__


def test_mvit_pools_and_head():
    model = build_model("mvit_v2_s", num_classes=4, pool="soft")
    skips = [name for name, m in model.named_modules() if isinstance(m, SoftPool3d)]
    assert skips and all(name.endswith("pool_skip.pool") for name in skips)
    with pytest.raises(ValueError, match="mvit_v2_s classifies its class token and has no head pool"):
        build_model("mvit_v2_s", head_pool="soft")
