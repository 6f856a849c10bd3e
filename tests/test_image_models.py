"""Image models with a SoftPool stem, and load_weights."""

import pytest
import torch
import torchvision
from torch import nn

from softpool3d import AdaptiveSoftPool2d, SoftPool2d
from softpool3d.models import build_model, list_models, load_weights


@pytest.mark.parametrize("name", list_models("image"))
def test_image_models_have_a_softpool_stem_and_run(seed, name):
    model = build_model(name, num_classes=7, head_pool="soft").eval()
    stems = [m for m in model.modules() if isinstance(m, SoftPool2d)]
    assert len(stems) == 1 and (stems[0].kernel_size, stems[0].stride) == (2, 2)
    assert sum(isinstance(m, AdaptiveSoftPool2d) for m in model.modules()) == 1
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 40)).shape == (2, 7)
    max_model = build_model(name, num_classes=7, pool="max")
    assert not any(isinstance(m, (SoftPool2d, AdaptiveSoftPool2d)) for m in max_model.modules())


@pytest.mark.parametrize("name,tv_builder", [
    ("resnet18", torchvision.models.resnet18), ("densenet121", torchvision.models.densenet121),
    ("resnext50_32x4d", torchvision.models.resnext50_32x4d),
])
def test_torchvision_format_state_dicts_load_strictly(name, tv_builder):
    build_model(name, head_pool="soft").load_state_dict(tv_builder().state_dict(), strict=True)


def test_resnext101_32x4d_shape():
    model = build_model("resnext101_32x4d")
    assert model.layer3[0].conv2.groups == 32 and len(model.layer3) == 23
    assert model.layer1[0].conv2.out_channels == 128    # 32 groups x width 4


def test_load_weights_checkpoint_forms_and_errors(tmp_path):
    source = build_model("resnet18", num_classes=5)
    target = build_model("resnet18", num_classes=5)
    prefixed = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"model": prefixed, "epoch": 3}, tmp_path / "ckpt.pt")
    assert load_weights(target, tmp_path / "ckpt.pt") == ([], [])
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    partial["extra.weight"] = torch.zeros(1)
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(RuntimeError, match=r"partial.pt does not match ResNet: missing keys \[fc.weight, fc.bias\]; "
                                           r"unexpected keys \[extra.weight\]"):
        load_weights(target, tmp_path / "partial.pt")
    assert load_weights(target, tmp_path / "partial.pt", strict=False) == (["fc.weight", "fc.bias"], ["extra.weight"])
    torch.save(build_model("resnet18", num_classes=9).state_dict(), tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match=r"(?s)other.pt: .*size mismatch for fc.weight"):
        load_weights(target, tmp_path / "other.pt")
    torch.save({"epoch": 1}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="no state_dict found"):
        load_weights(nn.Linear(2, 2), tmp_path / "empty.pt")
