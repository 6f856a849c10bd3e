"""Pretrained weights through the real loading path: files written at test time into a temporary
TORCH_HOME (torch.hub's cache), loaded by tag, path or URL; nothing is downloaded from the network.
"""

import argparse
import logging
import warnings

import pytest
import torch
import torchvision
from torch import nn

from softpool3d import SoftPool3d
from softpool3d.engine import load_pretrained
from softpool3d.models import WEIGHTS, build_model, weight_set
from softpool3d.models.pretrained import TORCHVISION_WEIGHTS, PretrainedError, cache_dir

# Our name -> (torchvision's builder, the clip (T, H, W) the logits are compared on).
# S3D's fixed AvgPool3d((2, 7, 7)) and MViT's position embeddings need their native sizes.
TORCHVISION = {
    "tv_r3d_18": ("r3d_18", (4, 32, 32)),
    "mc3_18": ("mc3_18", (4, 32, 32)),
    "r2plus1d_18": ("r2plus1d_18", (4, 32, 32)),
    "s3d": ("s3d", (16, 224, 224)),
    "mvit_v1_b": ("mvit_v1_b", (16, 224, 224)),
    "mvit_v2_s": ("mvit_v2_s", (16, 224, 224)),
    "swin3d_t": ("swin3d_t", (4, 64, 64)),
    "swin3d_s": ("swin3d_s", (4, 64, 64)),
    "swin3d_b": ("swin3d_b", (4, 64, 64)),
}


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME: torch.hub.get_dir() reads the variable on every call."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    assert cache_dir() == folder
    return folder


def torchvision_model(tv_name: str, **kwargs) -> nn.Module:
    """torchvision's model with random weights and random BatchNorm statistics (so a missed buffer shows)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(tv_name, weights=None, **kwargs)
    for name, buffer in model.named_buffers():
        if "running_mean" in name:
            buffer.uniform_(-0.5, 0.5)
        elif "running_var" in name:
            buffer.uniform_(0.5, 2.0)
    return model.eval()


def assert_same_tensors(state: dict, expected: dict, skip: tuple = ()) -> None:
    assert sorted(k for k in state if k not in skip) == sorted(k for k in expected if k not in skip)
    unequal = [k for k in expected if k not in skip and not torch.equal(state[k], expected[k])]
    assert not unequal, unequal


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_weights_load_by_tag_from_the_hub_cache(seed, torch_home, name):
    tv_name, clip = TORCHVISION[name]
    weights = weight_set(name, "kinetics400")
    reference = torchvision_model(tv_name)
    torch.save(reference.state_dict(), torch_home / weights.file_name)

    model = build_model(name, pretrained="kinetics400", pool="max").eval()
    assert_same_tensors(model.state_dict(), reference.state_dict())
    x = torch.randn(1, 3, *clip)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))

    # pool="soft": the same tensors, and the only modules that differ are max pools turned into SoftPool.
    soft = build_model(name, pretrained="kinetics400", pool="soft")
    assert_same_tensors(soft.state_dict(), reference.state_dict())
    names = [n for n, _ in model.named_modules()]
    assert names == [n for n, _ in soft.named_modules()]
    changed = [(type(a), type(b)) for a, b in zip(model.modules(), soft.modules()) if type(a) is not type(b)]
    pools = sum(isinstance(m, nn.MaxPool3d) for m in reference.modules())
    assert changed == [(nn.MaxPool3d, SoftPool3d)] * pools
    assert (pools > 0) == (name in {"s3d", "mvit_v1_b", "mvit_v2_s"})


@pytest.mark.parametrize("weights", TORCHVISION_WEIGHTS, ids=lambda w: f"{w.model}-{w.tag}")
def test_registry_agrees_with_torchvisions_weight_enums(weights):
    tv_name = TORCHVISION[weights.model][0]
    enum = torchvision.models.get_model_weights(tv_name)
    entry = next(e for e in enum if e.url.endswith("/" + weights.file_name))
    assert entry.url == weights.url
    assert tuple(entry.meta["categories"]) == weights.classes and weights.num_classes == 400
    transforms = entry.transforms()
    assert tuple(transforms.mean) == weights.mean and tuple(transforms.std) == weights.std
    assert transforms.crop_size[0] == weights.crop_size and transforms.resize_size[0] == weights.short_side
    assert f"top-1 {entry.meta['_metrics']['Kinetics-400']['acc@1']}," in weights.accuracy
    assert f"clip_len={weights.clip_len}" in entry.meta["_docs"]


def test_a_classifier_of_another_size_is_reinitialised_and_logged(seed, torch_home, caplog):
    reference = torchvision_model("r2plus1d_18")
    torch.save(reference.state_dict(), torch_home / "r2plus1d_18-91a641e6.pth")
    with caplog.at_level(logging.WARNING, logger="softpool3d"):
        model = build_model("r2plus1d_18", pretrained="kinetics400", num_classes=7, dropout=0.5)
    assert "re-initialised the classifier fc.1.weight, fc.1.bias" in caplog.text
    assert "400 classes, the model 7" in caplog.text
    # Every tensor but the classifier is the file's (its fc.* is the model's fc.1.*, behind the dropout).
    state = model.state_dict()
    assert_same_tensors({k: v for k, v in state.items() if not k.startswith("fc.")}, reference.state_dict(),
                        skip=("fc.weight", "fc.bias"))
    assert state["fc.1.weight"].shape == (7, 512)
    # With the file's class count, the classifier loads too, under the dropout's fc.1.
    same = build_model("r2plus1d_18", pretrained="kinetics400", dropout=0.5)
    assert torch.equal(same.fc[1].weight, reference.fc.weight)


def test_a_url_downloads_once_into_the_cache_then_works_offline(seed, torch_home, tmp_path):
    reference = torchvision_model("mc3_18")
    published = tmp_path / "published" / "mc3_18-a90a0ba3.pth"
    published.parent.mkdir()
    torch.save(reference.state_dict(), published)
    model = build_model("mc3_18", pretrained=published.as_uri())        # urllib fetches file:// URLs
    assert (torch_home / published.name).is_file()
    published.unlink()                                                  # the source is gone: the cache serves
    again = build_model("mc3_18", pretrained=published.as_uri())
    assert_same_tensors(again.state_dict(), reference.state_dict())
    assert_same_tensors(model.state_dict(), reference.state_dict())


def test_errors_name_the_file_and_say_what_to_do(seed, torch_home, tmp_path):
    reference = torchvision_model("r3d_18")
    path = torch_home / "r3d_18-b3b3357e.pth"
    torch.save(reference.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PretrainedError, match=r"r3d_18-b3b3357e.pth cannot be read .*truncated or not a "
                                              r"checkpoint; delete it"):
        build_model("tv_r3d_18", pretrained="kinetics400")
    path.write_text("not a checkpoint")
    with pytest.raises(PretrainedError, match="r3d_18-b3b3357e.pth .*delete it"):
        build_model("tv_r3d_18", pretrained="kinetics400")

    # Another architecture's file: the keys are listed, with the file and the architecture expected.
    torch.save(reference.state_dict(), tmp_path / "r3d.pth")
    with pytest.raises(PretrainedError, match=r"r3d.pth does not fit r2plus1d_18 .*missing \[.*unexpected \[.*"
                                              r"layer1.0.conv1.0.weight"):
        build_model("r2plus1d_18", pretrained=str(tmp_path / "r3d.pth"))
    with pytest.raises(PretrainedError, match=r"r3d.pth does not fit r3d_18 .*other shape \[stem.0.weight "
                                              r"\(64, 3, 3, 7, 7\) vs \(64, 3, 7, 7, 7\)"):
        build_model("r3d_18", pretrained=str(tmp_path / "r3d.pth"))   # Hara's layout, not torchvision's

    # A file that needs pickle is refused, never loaded with weights_only=False.
    torch.save({"state_dict": reference.state_dict(), "opts": argparse.Namespace(lr=0.1)}, tmp_path / "p.pth")
    with pytest.raises(PretrainedError, match=r"p.pth holds Python objects that only pickle can load .*"
                                              r"argparse.Namespace"):
        build_model("tv_r3d_18", pretrained=str(tmp_path / "p.pth"))

    with pytest.raises(PretrainedError, match=r"no pretrained weights 'kinetics700' for tv_r3d_18; "
                                              r"it has kinetics400"):
        weight_set("tv_r3d_18", "kinetics700")
    with pytest.raises(PretrainedError, match=r"neither a weight tag of tv_r3d_18 \(kinetics400\), nor a URL"):
        build_model("tv_r3d_18", pretrained="kinetics-400")
    with pytest.raises(PretrainedError, match=r"r3d18_K_200ep.pth is not there and has no direct download; "
                                              r"get r3d18_K_200ep.pth from https://github.com/kenshohara"):
        build_model("r3d_18", pretrained="kinetics700")


# ----------------------------------------------------------------- Hara et al.'s 3D-ResNets-PyTorch

def hara_checkpoint(depth: int, num_classes: int, *, shortcut: str = "B") -> dict:
    """A checkpoint as 3D-ResNets-PyTorch's main.py saves it, keys and shapes as in its models/resnet.py,
    random values."""
    bottleneck = depth >= 50
    layers = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
    state = {}

    def conv(key, cout, cin, k):
        state[f"{key}.weight"] = torch.randn(cout, cin, k, k, k)

    def bn(key, c):
        state.update({f"{key}.weight": torch.randn(c), f"{key}.bias": torch.randn(c),
                      f"{key}.running_mean": torch.randn(c), f"{key}.running_var": torch.rand(c) + 0.5,
                      f"{key}.num_batches_tracked": torch.tensor(1000)})

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for b in range(blocks):
            key, stride = f"layer{stage}.{b}", 2 if stage > 1 and b == 0 else 1
            cout = planes * (4 if bottleneck else 1)
            if bottleneck:
                conv(f"{key}.conv1", planes, cin, 1), bn(f"{key}.bn1", planes)
                conv(f"{key}.conv2", planes, planes, 3), bn(f"{key}.bn2", planes)
                conv(f"{key}.conv3", cout, planes, 1), bn(f"{key}.bn3", cout)
            else:
                conv(f"{key}.conv1", planes, cin, 3), bn(f"{key}.bn1", planes)
                conv(f"{key}.conv2", planes, planes, 3), bn(f"{key}.bn2", planes)
            if (stride != 1 or cin != cout) and shortcut == "B":
                conv(f"{key}.downsample.0", cout, cin, 1), bn(f"{key}.downsample.1", cout)
            cin = cout
    state["fc.weight"], state["fc.bias"] = torch.randn(num_classes, cin), torch.randn(num_classes)
    return {"epoch": 200, "arch": f"resnet-{depth}", "state_dict": state}


def hara_places(model: nn.Module) -> dict[str, torch.Tensor]:
    """Where each of Hara et al.'s keys must land in our ResNet3d, read off the modules themselves."""
    places = {}

    def put(prefix, module):
        for name, tensor in module.state_dict(keep_vars=True).items():
            places[f"{prefix}.{name}"] = tensor

    put("conv1", model.stem[0]), put("bn1", model.stem[1]), put("fc", model.fc)
    for stage in range(1, 5):
        for b, block in enumerate(getattr(model, f"layer{stage}")):
            convs = [m for m in block.body if isinstance(m, nn.Conv3d)]
            bns = [m for m in block.body if isinstance(m, nn.BatchNorm3d)]
            for k, (c, n) in enumerate(zip(convs, bns), start=1):
                put(f"layer{stage}.{b}.conv{k}", c), put(f"layer{stage}.{b}.bn{k}", n)
            if isinstance(block.shortcut, nn.Sequential):
                put(f"layer{stage}.{b}.downsample.0", block.shortcut[0])
                put(f"layer{stage}.{b}.downsample.1", block.shortcut[1])
    return places


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_hara_checkpoints_land_in_the_right_parameters(seed, tmp_path, depth, prefix):
    checkpoint = hara_checkpoint(depth, 700)
    checkpoint["state_dict"] = {prefix + k: v for k, v in checkpoint["state_dict"].items()}
    torch.save(checkpoint, tmp_path / "hara.pth")
    model = build_model(f"r3d_{depth}", pretrained=str(tmp_path / "hara.pth"), num_classes=700, pool="soft")
    places = hara_places(model)
    file_state = {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items()}
    assert sorted(places) == sorted(file_state)          # none left over on either side
    assert len({id(t) for t in places.values()}) == len(model.state_dict())
    unequal = [k for k, v in file_state.items() if not torch.equal(places[k], v)]
    assert not unequal, unequal


def test_hara_weights_by_tag_with_another_class_count(seed, torch_home, caplog):
    checkpoint = hara_checkpoint(18, 1039)
    torch.save(checkpoint, torch_home / "r3d18_KM_200ep.pth")
    model = build_model("r3d_18", pretrained="kinetics700_moments")
    assert model.fc.out_features == 1039 and torch.equal(model.fc.weight, checkpoint["state_dict"]["fc.weight"])
    with caplog.at_level(logging.WARNING, logger="softpool3d"):
        fine_tune = build_model("r3d_18", pretrained="kinetics700_moments", num_classes=5)
    assert "re-initialised the classifier fc.weight, fc.bias: the file has 1039 classes, the model 5" in caplog.text
    places = hara_places(fine_tune)
    assert all(torch.equal(places[k], v) for k, v in checkpoint["state_dict"].items() if not k.startswith("fc."))
    assert weight_set("r3d_18", "kinetics700_moments").mean == (0.4345, 0.4051, 0.3775)


def test_hara_shortcut_a_and_a_wrong_arch_are_clear_errors(seed, tmp_path):
    torch.save(hara_checkpoint(18, 400, shortcut="A") | {"arch": "resnet-18"}, tmp_path / "a.pth")
    with pytest.raises(PretrainedError, match=r"a.pth has no downsample \(projection\) keys: it was trained with "
                                              r"shortcut A"):
        build_model("r3d_18", pretrained=str(tmp_path / "a.pth"))
    torch.save(hara_checkpoint(34, 700), tmp_path / "r34.pth")
    with pytest.raises(PretrainedError, match=r"r34.pth holds arch 'resnet-34', but r3d_18 is Hara et al.'s "
                                              r"'resnet-18'"):
        build_model("r3d_18", pretrained=str(tmp_path / "r34.pth"))


def test_every_registered_model_is_buildable_by_name():
    from softpool3d.models import MODELS
    from softpool3d.models.pytorchvideo_hub import PYTORCHVIDEO_MODELS

    assert {name for name, _ in WEIGHTS} <= set(MODELS) | set(PYTORCHVIDEO_MODELS)
    assert {name for name, _ in WEIGHTS if name.startswith("ptv_")} == set(PYTORCHVIDEO_MODELS)


def test_engine_load_pretrained_takes_a_tag(seed, torch_home):
    reference = torchvision_model("r3d_18")
    torch.save(reference.state_dict(), torch_home / "r3d_18-b3b3357e.pth")
    model = build_model("tv_r3d_18", num_classes=3)
    assert load_pretrained(model, "kinetics400", name="tv_r3d_18") == ["fc.weight", "fc.bias"]
    assert torch.equal(model.stem[0].weight, reference.stem[0].weight)


def test_pytorchvideo_hub_weights_load_when_pytorchvideo_imports(seed, torch_home):
    pytest.importorskip("pytorchvideo.models.hub", reason="pytorchvideo is not installed (it is optional)")
    from pytorchvideo.models import hub

    reference = hub.x3d_xs(pretrained=False).eval()
    torch.save({"model_state": reference.state_dict()}, torch_home / "X3D_XS.pyth")
    model = build_model("ptv_x3d_xs", pretrained="kinetics400", pool="max").eval()
    assert_same_tensors(model.state_dict(), reference.state_dict())
    x = torch.randn(1, 3, 4, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_predict_tool_names_kinetics_classes_with_pretrained_weights(seed, torch_home, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    from softpool3d.datasets.io import write_video

    torch.save(torchvision_model("r2plus1d_18").state_dict(), torch_home / "r2plus1d_18-91a641e6.pth")
    rng = np.random.default_rng(seed)
    write_video(tmp_path / "walk.mp4", rng.integers(0, 256, (40, 72, 96, 3), dtype=np.uint8), fps=10)
    tool = Path(__file__).resolve().parents[1] / "tools" / "predict.py"
    done = subprocess.run([sys.executable, str(tool), str(tmp_path / "walk.mp4"), "--model", "r2plus1d_18",
                           "--pretrained", "kinetics400"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    named = [line.split("%", 1)[1].strip() for line in lines[1:6]]
    assert lines[0] == str(tmp_path / "walk.mp4") and len(named) == 5
    assert set(named) <= set(weight_set("r2plus1d_18", "kinetics400").classes)
    assert "16 frames, crop 112, mean (0.43216, 0.394666, 0.37645)" in done.stderr


def test_shipped_fine_tuning_configs_use_their_weights_clip_and_normalisation():
    from softpool3d.engine import load_config

    from helpers import ROOT

    paths = sorted((ROOT / "configs").rglob("*_kinetics*.yaml"))
    assert len(paths) >= 25
    for path in paths:
        config = load_config(path)
        weights = weight_set(config.model.name, config.model.pretrained)
        data = config.data
        assert (data.clip_len, data.crop_size, tuple(data.mean), tuple(data.std)) == \
            (weights.clip_len, weights.crop_size, weights.mean, weights.std), path


def test_a_config_naming_weights_takes_their_normalisation_unless_it_sets_its_own(caplog):
    from softpool3d.datasets.transforms import KINETICS_MEAN
    from softpool3d.engine import load_config
    from softpool3d.engine.data import clip_config

    named = ["model.name=mvit_v2_s", "model.pretrained=kinetics400"]
    with caplog.at_level(logging.INFO, logger="softpool3d"):
        clip = clip_config(load_config(None, named))
    assert clip.mean == (0.45, 0.45, 0.45) and clip.std == (0.225, 0.225, 0.225)
    assert "mvit_v2_s kinetics400: normalising with mean (0.45, 0.45, 0.45), std (0.225, 0.225, 0.225)" in caplog.text
    assert "differs from what the weights were trained with: crop_size 112 (the weights': 224)" in caplog.text
    own = clip_config(load_config(None, [*named, "data.mean=[0.5,0.5,0.5]"]))
    assert own.mean == (0.5, 0.5, 0.5) and own.std == (0.225, 0.225, 0.225)
    assert clip_config(load_config(None)).mean == KINETICS_MEAN           # no weights named: as before


def test_predict_tool_slides_windows_with_pretrained_weights(seed, torch_home, tmp_path):
    import csv
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    from softpool3d.datasets.io import write_video

    torch.save(torchvision_model("mc3_18").state_dict(), torch_home / "mc3_18-a90a0ba3.pth")
    write_video(tmp_path / "long.mp4", np.random.default_rng(seed).integers(0, 256, (60, 72, 96, 3), dtype=np.uint8),
                fps=10)
    tool = Path(__file__).resolve().parents[1] / "tools" / "predict.py"
    done = subprocess.run([sys.executable, str(tool), str(tmp_path / "long.mp4"), "--model", "mc3_18", "--pretrained",
                           "kinetics400", "--window", "3", "--stride", "3", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with (tmp_path / "out" / "long_windows.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and {row["top1"] for row in rows} <= set(weight_set("mc3_18", "kinetics400").classes)


def test_predict_tool_errors_name_its_flags(tmp_path, capsys):
    import pytest

    from softpool3d.cli import predict

    video = str(tmp_path / "walk.mp4")
    assert predict.main([video, "--model", "r2plus1d_18", "--pretrained", "kinetics400", "--views", "3"]) == 2
    assert "--views='3' must look like CLIPSxCROPS" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        predict.main([video, "--model", "r2plus1d_18", "--pretrained", "kinetics400", "--pool", "sof"])
    assert stopped.value.code == 2 and "--pool: invalid choice: 'sof'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:                  # a checkpoint keeps its own pools
        predict.main([video, "--checkpoint", str(tmp_path / "last.pt"), "--pool", "soft"])
    assert stopped.value.code == 2 and "--pool is for --pretrained" in capsys.readouterr().err
    # A model without weights (or no model at all): the error lists the models that have weights.
    assert predict.main([video, "--model", "r3d_19", "--pretrained", "kinetics400"]) == 2
    error = capsys.readouterr().err
    assert "no pretrained weights 'kinetics400' for r3d_19" in error and "r2plus1d_18" in error
