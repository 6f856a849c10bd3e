"""The transfer study (softpool3d study-transfer) end to end on a tiny SynthMotion, and the data options it uses
(data.keep_classes, data.train_videos_per_class). The real training and test code, no mocks."""

import json
from pathlib import Path

import pytest
import torch

from softpool3d.engine import DataError, load_checkpoint, load_config
from softpool3d.engine.config import ConfigError
from softpool3d.engine.data import build_dataset
from softpool3d.engine.transfer import run_transfer_study

from helpers import ROOT

RECIPE = str(ROOT / "configs" / "synthmotion.yaml")
# The main job shrunk to the synth6 fixture: 1 epoch of 4-frame 32x32 clips, batch 4 (its 1x1 test views stay).
SHRINK = ["data.clip_len=4", "data.frame_interval=1", "data.short_side=32", "data.crop_size=32",
          "data.num_workers=0", "train.batch_size=4", "train.epochs=1", "test.batch_size=4", "data.generate=false"]


def test_keep_classes_and_train_videos_per_class(synth6, tmp_path):
    base = [f"data.root={synth6}", *SHRINK]
    config = load_config(RECIPE, [*base, "data.keep_classes=[MoveUp,MoveLeft,MoveRight]",
                                  "data.train_videos_per_class=3"])
    train, test = build_dataset(config, "train"), build_dataset(config, "test")
    assert train.classes == test.classes == ["MoveLeft", "MoveRight", "MoveUp"]   # the dataset's order
    assert sorted(label for _, label in train.samples) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(Path(path).parent.name.lower() in {"moveleft", "moveright", "moveup"} for path, _ in train.samples)
    assert len(test) == 6                                  # every test video of the kept classes
    whole = build_dataset(load_config(RECIPE, base), "train")
    first = [p for p, label in whole.samples if whole.classes[label] == "MoveUp"][:3]
    assert [p for p, label in train.samples if label == 2] == first   # the first N in list order
    with pytest.raises(DataError, match="data.keep_classes: 'Jump' is not a class"):
        build_dataset(load_config(RECIPE, [*base, "data.keep_classes=[MoveUp,Jump]"]), "train")
    with pytest.raises(ConfigError, match="keeps 'MoveLeft' but not its flip_pairs mirror 'MoveRight'"):
        load_config(RECIPE, [*base, "data.keep_classes=[MoveUp,MoveLeft]"])
    with pytest.raises(ConfigError, match="data.keep_classes must name two or more"):
        load_config(RECIPE, [*base, "data.keep_classes=[MoveUp]"])
    with pytest.raises(ConfigError, match="data.train_videos_per_class must be >= 1"):
        load_config(RECIPE, [*base, "data.train_videos_per_class=0"])


def test_transfer_study_loads_the_backbone_and_reinitialises_the_classifier(synth6, tmp_path):
    out = tmp_path / "transfer"
    overrides = [f"data.root={synth6}", *SHRINK]
    pretrain = ["MoveLeft", "MoveRight", "MoveUp", "MoveDown"]
    finetune = ["RotateClockwise", "RotateCounterClockwise"]
    # A learning rate of 1e-12: the fine-tuned weights are the ones they started from.
    report = run_transfer_study(RECIPE, out, seeds=[0], pretrain_classes=pretrain, finetune_classes=finetune,
                                videos_per_class=2, ft_epochs=1, ft_lr=1e-12, overrides=overrides,
                                keep_checkpoints=True)
    start = load_checkpoint(out / "r3d_10_pretrain_s0" / "last.pt")
    pretrained = load_checkpoint(out / "r3d_10_finetune_pretrained_s0" / "last.pt")
    scratch = load_checkpoint(out / "r3d_10_finetune_scratch_s0" / "last.pt")
    assert start["classes"] == pretrain and pretrained["classes"] == scratch["classes"] == finetune
    assert pretrained["config"]["data"]["flip_pairs"] == [finetune]     # the pair inside the split only
    convs = [k for k, v in start["model"].items() if k.endswith("weight") and v.dim() == 5]
    for key in (convs[0], convs[-1]):                      # the stem's and the last block's convolutions
        assert torch.allclose(pretrained["model"][key], start["model"][key], atol=1e-6), key
        assert not torch.allclose(scratch["model"][key], start["model"][key], atol=1e-3), key
    assert start["model"]["fc.weight"].shape[0] == 4 and pretrained["model"]["fc.weight"].shape[0] == 2
    # The classifier is the seed's fresh one in both fine-tunes.
    assert torch.allclose(pretrained["model"]["fc.weight"], scratch["model"]["fc.weight"], atol=1e-6)
    assert [r["start"] for r in report["runs"]] == ["pretrained", "scratch"]
    assert all(r["steps"] == 1 for r in report["runs"])    # 2 classes x 2 videos: one batch of 4
    assert all(r["epochs"] == 1 for r in report["runs"])
    assert "pretrained − scratch" in (out / "study_transfer.md").read_text()
    assert (out / "study_transfer.png").stat().st_size > 1000
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    again = run_transfer_study(RECIPE, out, seeds=[0], pretrain_classes=pretrain, finetune_classes=finetune,
                               videos_per_class=2, ft_epochs=1, ft_lr=1e-12, overrides=overrides)
    assert again["runs"] == report["runs"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps                # nothing retrained
    with pytest.raises(ValueError, match="separates the mirror pair"):
        run_transfer_study(RECIPE, tmp_path / "bad", seeds=[0], pretrain_classes=["MoveLeft", "MoveUp"],
                           finetune_classes=["MoveRight", "MoveDown"], overrides=overrides)
    with pytest.raises(ValueError, match="share \\['MoveUp'\\]"):
        run_transfer_study(RECIPE, tmp_path / "bad", seeds=[0], pretrain_classes=["MoveUp", "MoveDown"],
                           finetune_classes=["MoveUp", "Approach"], overrides=overrides)
