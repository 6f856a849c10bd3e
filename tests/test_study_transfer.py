"""The transfer study (softpool3d study-transfer) end to end on a tiny SynthMotion, and the data options it uses
(data.keep_classes, data.train_videos_per_class). The real training and test code, no mocks."""

import json
from pathlib import Path

import pytest
import torch

from softpool3d.engine import DataError, load_checkpoint, load_config
from softpool3d.engine.config import ConfigError
from softpool3d.engine import transfer
from softpool3d.engine.data import build_dataset, clip_config
from softpool3d.engine.transfer import class_overrides, run_transfer_study

from helpers import RECIPE, SHRINK


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
    paired = report["paired"][0]                           # named by the arm: start, not pool
    assert (paired["start"], paired["baseline"]) == ("pretrained", "scratch") and "pool" not in paired
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


@pytest.mark.parametrize("pretrain,finetune,message", [
    # the fine-tune side is the wrong one: before, these failed only after the pretraining
    (["MoveUp", "MoveDown", "Approach"], ["RotateClockwise", "Jump"], "'Jump' is not a SynthMotion class"),
    (["MoveUp", "MoveDown", "Approach"], ["SpeedUp", "SpeedUp"], "--finetune-classes must name two or more different"),
    (["MoveUp", "MoveDown", "Approach"], ["RotateClockwise", "SpeedUp"], "separates the mirror pair"),
    (["MoveUp", "MoveUp", "Approach"], ["SpeedUp", "SlowDown"], "--pretrain-classes must name two or more different"),
    (["MoveUp", "MoveDown", "Approach"], ["Approach", "SpeedUp"], "share \\['Approach'\\]"),
    # equal counts: the pretrained classifier would load instead of being re-initialised
    (["MoveUp", "MoveDown"], ["SpeedUp", "SlowDown"], "both have 2 classes"),
])
def test_transfer_split_is_checked_before_any_training(tmp_path, monkeypatch, pretrain, finetune, message):
    monkeypatch.setattr(transfer, "train_and_test", lambda *a, **k: pytest.fail("trained before the check"))
    with pytest.raises(ValueError, match=message):
        run_transfer_study(RECIPE, tmp_path, seeds=[0], pretrain_classes=pretrain, finetune_classes=finetune,
                           overrides=SHRINK)
    assert not any(tmp_path.iterdir())


def test_transfer_study_rejects_repeated_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "train_and_test", lambda *a, **k: pytest.fail("trained before the check"))
    with pytest.raises(ValueError, match="--seeds repeats a value"):
        run_transfer_study(RECIPE, tmp_path, seeds=[0, 1, 0], overrides=SHRINK)


def test_a_side_without_mirror_pair_keeps_plain_flips():
    # MoveUp, MoveDown, Approach and Recede are their own mirror images: flipping them is a plain flip.
    side = ["MoveUp", "MoveDown", "Approach", "Recede"]
    made = class_overrides(RECIPE, SHRINK, side)
    assert made == ["data.keep_classes=[MoveUp,MoveDown,Approach,Recede]", "data.flip_pairs=[]"]
    config = load_config(RECIPE, [*SHRINK, *made])
    assert config.data.flip and clip_config(config).flip and clip_config(config).flip_pairs == ()
    unset = load_config(RECIPE, [*SHRINK, *made, "data.flip=null"])
    assert clip_config(unset).flip                                       # auto: on, nothing to relabel
    # A kept class a flip relabels still needs its pair (or no flips), naming the class.
    with pytest.raises(ConfigError, match="in no pair: RotateClockwise, RotateCounterClockwise"):
        load_config(RECIPE, [*SHRINK, "data.keep_classes=[RotateClockwise,RotateCounterClockwise]",
                             "data.flip_pairs=[]"])
    assert not clip_config(load_config(RECIPE, [*SHRINK, "data.keep_classes=[RotateClockwise,RotateCounterClockwise]",
                                                "data.flip_pairs=[]", "data.flip=null"])).flip
    # The default split keeps its pairs (the overrides the running study uses, unchanged).
    assert class_overrides(RECIPE, [], transfer.PRETRAIN_CLASSES) == [
        "data.keep_classes=[MoveLeft,MoveRight,MoveUp,MoveDown,Approach,Recede]", "data.flip_pairs=[[MoveLeft,MoveRight]]"]
    assert class_overrides(RECIPE, [], transfer.FINETUNE_CLASSES) == [
        "data.keep_classes=[RotateClockwise,RotateCounterClockwise,SpeedUp,SlowDown]",
        "data.flip_pairs=[[RotateClockwise,RotateCounterClockwise]]"]


def test_a_split_mirror_pair_is_fine_without_flips():
    config = load_config(RECIPE, [*SHRINK, "data.keep_classes=[MoveUp,MoveLeft]", "data.flip=false"])
    assert list(config.data.keep_classes) == ["MoveUp", "MoveLeft"]


def test_subset_errors_name_what_is_wrong(synth6, monkeypatch):
    import softpool3d.engine.data as data_module
    from softpool3d.datasets import VideoDataset

    config = load_config(RECIPE, [f"data.root={synth6}", *SHRINK, "data.keep_classes=[MoveUp,MoveDown]"])
    whole = build_dataset(load_config(RECIPE, [f"data.root={synth6}", *SHRINK]), "test")
    only_left = [(p, label) for p, label in whole.samples if whole.classes[label] == "MoveLeft"]
    monkeypatch.setattr(data_module, "_whole_dataset",
                        lambda *a: VideoDataset(only_left, whole.classes, train=False, clip=whole.clip))
    with pytest.raises(DataError, match=r"^the test split with data.keep_classes=\['MoveUp', 'MoveDown'\] and "
                                        r"data.train_videos_per_class=None: no videos of MoveUp, MoveDown here"):
        build_dataset(config, "test")
