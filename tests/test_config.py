"""Configs (schema, bases, overrides, errors), the LR schedule and checkpoints (atomic writes, damaged
files, fine-tuning)."""

import pytest
import torch

from softpool3d.engine import (CheckpointError, ConfigError, load_checkpoint, load_config, load_pretrained,
                               save_checkpoint)
from softpool3d.engine.builders import warmup_cosine
from softpool3d.engine.config import from_plain, to_plain
from softpool3d.models import build_model

from helpers import ROOT

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


# ---------------------------------------------------------------- configs


def test_every_shipped_config_loads():
    assert len(CONFIGS) >= 30
    for path in CONFIGS:
        config = load_config(path)
        for key in ("output_dir", "seed", "model.name", "model.pool", "data.root", "data.clip_len",
                    "train.epochs", "train.batch_size"):
            node = config
            for part in key.split("."):
                node = node[part]
            assert node is not None, (path, key)
        build_model(config.model.name, num_classes=3, pool=config.model.pool)   # every model name is real


def test_shipped_configs_cover_models_and_pools():
    seen = set()
    for path in CONFIGS:
        config = load_config(path)
        seen.add((config.data.dataset, config.model.name, config.model.pool))
    for dataset in ("ucf101", "hmdb51", "kinetics"):
        for model in ("r3d_18", "r3d_50", "i3d_r50", "x3d_m", "c3d"):
            for pool in ("soft", "max"):
                assert (dataset, model, pool) in seen, (dataset, model, pool)


def test_overrides_and_bases(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {name: c3d}\noptim: {lr: 0.5}\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\noptim: {lr: 0.05}\n")
    config = load_config(tmp_path / "exp.yaml", ["data.clip_len=8", "train.amp=bf16"])
    assert (config.model.name, config.optim.lr, config.data.clip_len, config.train.amp) == ("c3d", 0.05, 8, "bf16")
    assert from_plain(to_plain(config)) == config


@pytest.mark.parametrize("override,message", [
    ("optim.lrr=0.1", "unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
    ("data.clip_length=8", "did you mean 'data.clip_len'"),
    ("trian.epochs=3", "did you mean 'train'"),
    ("train.epochs=many", "bad value for 'train.epochs'"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("model.pool=maxx", "model.pool='maxx' is not one of"),
    ("model.head_pool=median", "model.head_pool='median' is not one of soft, max, avg"),
    ("data.backend=opencv", "data.backend='opencv' is not one of auto, pyav"),
    ("data.flip_pairs=[]", "data.flip=true with data.dataset=synthmotion: a horizontal flip changes SynthMotion's labels"),
    ("test.views=10", "CLIPSxCROPS"),
    ("optim.lr", "must look like key=value"),
    ("model.name=r3d_19", "model.name='r3d_19' is not one of c3d, i3d_r50"),
    ("model.name=resnet18", "model.name='resnet18' is not one of"),        # an image model
    ("train.log_every=0", "train.log_every must be >= 1"),
    ("data.num_workers=-1", "data.num_workers must be >= 0"),
    ("data.min_area=0", "data.min_area must be in (0, 1]"),
    ("model.dropout=1.0", "model.dropout must be < 1"),
    ("data.crop_size=80", "data.crop_size=80 is larger than data.short_side=64"),
    ("data.synth_videos_per_class=5", "data.synth_videos_per_class must be >= 10"),
    ("train.clip_grad_norm=0", "train.clip_grad_norm must be > 0"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(ROOT / "configs" / "synthmotion.yaml", [override])


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  nmae: r3d_18\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'model.nmae'; did you mean 'model.name'"):
        load_config(bad)
    bad.write_text("train:\n  epochs: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: bad value for 'train.epochs'"):
        load_config(bad)
    bad.write_text("!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_warmup_then_cosine():
    factor = warmup_cosine(total_steps=100, warmup_steps=10, start_factor=0.1, min_factor=0.0)
    assert factor(0) == pytest.approx(0.1) and factor(5) == pytest.approx(0.55) and factor(10) == pytest.approx(1)
    assert factor(55) == pytest.approx(0.5) and factor(100) == pytest.approx(0, abs=1e-12)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 100))


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)

    def crash(state, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.randn(1000)}, "epoch": 1}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last.pt cannot be read .* truncated or corrupt"):
        load_checkpoint(path)
    (tmp_path / "notours.pt").write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="notours.pt"):
        load_checkpoint(tmp_path / "notours.pt")


def test_fine_tuning_reinitialises_only_the_classifier(tmp_path):
    source = build_model("r3d_10", num_classes=7, pool="soft")
    save_checkpoint({"model": source.state_dict()}, tmp_path / "k.pt")
    target = build_model("r3d_10", num_classes=3, pool="soft")
    assert load_pretrained(target, tmp_path / "k.pt") == ["fc.weight", "fc.bias"]
    assert torch.equal(target.stem[0].weight, source.stem[0].weight)
    other = build_model("r3d_18", num_classes=3, pool="soft")
    with pytest.raises(CheckpointError, match="does not match"):
        load_pretrained(other, tmp_path / "k.pt")


