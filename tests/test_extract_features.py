"""tools/extract_features.py: the features are the network's own pooled activations, and its classifier on
them gives tools/test.py's scores."""

import csv
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from softpool3d.engine import save_checkpoint
from softpool3d.engine.config import to_plain
from softpool3d.engine.data import build_dataset
from softpool3d.engine.features import classifier_of, classifier_weights, features_and_logits
from softpool3d.models import MODELS, VIDEO_MODELS, build_model

from helpers import ROOT, tiny, torchrun

CLASSES = ["MoveLeft", "MoveRight", "MoveUp"]


@pytest.fixture(scope="module")
def run(synth, tmp_path_factory):
    """A checkpoint (r3d_10, SoftPool, global SoftPool head) and the overrides its tools take."""
    folder = tmp_path_factory.mktemp("features")
    overrides = [f"data.root={synth}", f"output_dir={folder}", "model.name=r3d_10", "model.head_pool=soft",
                 "data.clip_len=4", "data.frame_interval=1", "data.short_side=32", "data.crop_size=32",
                 "data.num_workers=0", "test.views=2x3", "test.batch_size=4", "train.progress=false"]
    config = tiny(synth, folder, *overrides)
    torch.manual_seed(0)
    model = build_model("r3d_10", num_classes=3, pool="soft", head_pool="soft").eval()
    save_checkpoint({"model": model.state_dict(), "config": to_plain(config), "classes": CLASSES}, folder / "m.pt")
    return config, model, folder, overrides


def _tool(name, *args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *args], capture_output=True, text=True,
                          timeout=600)


def test_features_are_the_pooled_activations_and_reproduce_the_test_scores(run):
    config, model, folder, overrides = run
    common = ["--config", str(ROOT / "configs" / "synthmotion.yaml"), "--checkpoint", str(folder / "m.pt")]
    done = _tool("extract_features.py", *common, "--out", str(folder / "split"), "--format", "split", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    features = np.load(folder / "split" / "test_features.npy")
    with (folder / "split" / "test_index.csv").open() as handle:
        index = list(csv.DictReader(handle))
    dataset = build_dataset(config, "test", views=(2, 3))
    assert features.shape == (9, 6, 512) and [row["video"] for row in index] == [p for p, _ in dataset.samples]

    # The network's pooled activations, computed here without hooks: SoftPool head, flattened.
    video = dataset[4]["video"]                                           # (6, 3, 4, 32, 32)
    with torch.no_grad():
        x = model.layer4(model.layer3(model.layer2(model.layer1(model.pool(model.stem(video))))))
        pooled = model.head_pool(x).flatten(1)
    torch.testing.assert_close(torch.from_numpy(features[4]), pooled, rtol=1e-5, atol=1e-5)

    # The classifier on the features gives tools/test.py's video scores.
    done = _tool("test.py", *common, *overrides, f"test.output_dir={folder / 'report'}")
    assert done.returncode == 0, done.stderr[-3000:]
    with (folder / "report" / "predictions.csv").open() as handle:
        predictions = {row["video"]: row for row in csv.DictReader(handle)}
    with torch.no_grad():
        probs = torch.softmax(classifier_of(model)(torch.from_numpy(features)), -1).mean(1)
    for row, p in zip(index, probs):
        expected = predictions[row["video"]]
        assert CLASSES[int(p.argmax())] == expected["top1"]
        assert float(p.max()) == pytest.approx(float(expected["score1"]), abs=1e-4)


def test_npy_per_video_mean_views_and_torchrun_shards(run, tmp_path):
    config, model, folder, overrides = run
    common = ["--config", str(ROOT / "configs" / "synthmotion.yaml"), "--checkpoint", str(folder / "m.pt")]
    done = _tool("extract_features.py", *common, "--out", str(tmp_path / "npy"), "--mean-views", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted((tmp_path / "npy" / "test").rglob("*.npy"))
    assert len(files) == 9 and all(np.load(f).shape == (512,) for f in files)
    assert files[0].relative_to(tmp_path / "npy" / "test").parts[0] == "videos"    # the dataset's layout
    done = torchrun("extract_features.py", *common, "--out", str(tmp_path / "ddp"), "--format", "split",
                    *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ddp = np.load(tmp_path / "ddp" / "test_features.npy")                  # 9 videos over 2 ranks, each once
    plain = np.load(folder / "split" / "test_features.npy") if (folder / "split").exists() else None
    assert ddp.shape == (9, 6, 512)
    if plain is not None:
        np.testing.assert_allclose(ddp, plain, rtol=1e-4, atol=1e-5)
    done = _tool("extract_features.py", *common, "--out", str(tmp_path / "x"), *overrides, "--videos",
                 str(tmp_path / "missing.mp4"))
    assert done.returncode != 0 and "missing.mp4" in done.stderr and "features written" not in done.stdout
    assert not (tmp_path / "x").exists()


# Swin3D's and MViT's relative-position index buffers are computed at build time: built on the meta device
# they would hold garbage, so these models are built for real.
BUILT_FOR_REAL = {"swin3d_t", "swin3d_s", "swin3d_b", "mvit_v1_b", "mvit_v2_s"}
CLIPS = {"mvit_v1_b": (16, 224, 224), "mvit_v2_s": (16, 224, 224)}     # MViT takes only 16x224x224 clips


def _random_model(name: str, num_classes: int) -> torch.nn.Module:
    """Model ``name`` with small random weights, built on the meta device first (a full init takes seconds)."""
    real = name in BUILT_FOR_REAL
    with warnings.catch_warnings(), torch.device("cpu" if real else "meta"):
        warnings.simplefilter("ignore")                      # pool="soft" on models without pools
        model = build_model(name, num_classes=num_classes)
    model = (model if real else model.to_empty(device="cpu")).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.parameters():          # unit-variance outputs: std 1/sqrt(fan-in)
            fan_in = tensor[0].numel() if tensor.dim() > 1 else 100
            tensor.normal_(0, fan_in ** -0.5, generator=generator)
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
                module.weight.fill_(1.0)
                module.bias.zero_()
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_features_are_the_classifier_input_for_every_model(name):
    # S3D's classifier is a 1x1x1 Conv3d, the others' an nn.Linear: either way the logits are an affine map
    # of the features, and the features are not the logits themselves.
    model = _random_model(name, num_classes=5)
    x = torch.randn((2, 3, *CLIPS.get(name, (8, 32, 32))) if name in VIDEO_MODELS else (2, 3, 32, 32),
                    generator=torch.Generator().manual_seed(1))
    features, logits = features_and_logits(model, x)
    weight, bias = classifier_weights(classifier_of(model))
    assert features.shape == (2, weight.shape[1]) and weight.shape[0] == 5 and logits.shape == (2, 5)
    torch.testing.assert_close(features @ weight.T + bias, logits, rtol=1e-4, atol=1e-5)
    assert not torch.equal(features[0], features[1])


@pytest.fixture(scope="module")
def s3d_run(synth, tmp_path_factory):
    """An S3D checkpoint, the tool's main() and its common arguments, and three videos in two folders."""
    folder = tmp_path_factory.mktemp("s3d")
    overrides = [f"data.root={synth}", f"output_dir={folder}", "model.name=s3d", "data.clip_len=8",
                 "data.frame_interval=1", "data.short_side=32", "data.crop_size=32", "data.num_workers=0",
                 "test.views=1x1", "test.batch_size=2", "train.progress=false"]
    config = tiny(synth, folder, *overrides)
    model = _random_model("s3d", num_classes=3)
    save_checkpoint({"model": model.state_dict(), "config": to_plain(config), "classes": CLASSES}, folder / "m.pt")
    videos = sorted((synth / "videos").rglob("*.mp4"))
    for target, source in (("a/clip.mp4", videos[0]), ("b/clip.mp4", videos[1]), ("a/clip.avi", videos[2])):
        (folder / target).parent.mkdir(exist_ok=True)
        shutil.copy(source, folder / target)
    (folder / "broken.mp4").write_bytes(b"not a video")
    from softpool3d.cli.extract_features import main
    common = ["--config", str(ROOT / "configs" / "synthmotion.yaml"), "--checkpoint", str(folder / "m.pt")]
    return folder, model, config, main, common, overrides


def test_s3d_features_and_same_named_videos_in_two_folders(s3d_run, tmp_path, capsys):
    folder, model, config, main, common, overrides = s3d_run
    a, b = folder / "a" / "clip.mp4", folder / "b" / "clip.mp4"
    assert main([*common, "--out", str(tmp_path / "npy"), *overrides, "--videos", str(a), str(b)]) == 0
    written = sorted(p.relative_to(tmp_path / "npy") for p in (tmp_path / "npy").rglob("*.npy"))
    assert [str(p) for p in written] == ["videos/a/clip.npy", "videos/b/clip.npy"]   # not one videos/clip.npy
    first, second = (np.load(tmp_path / "npy" / p) for p in written)
    assert first.shape == (1, 1024) and not np.allclose(first, second)
    # The S3D features are its own pooled activations: computed here by hand, without hooks.
    from softpool3d.datasets import VideoDataset
    from softpool3d.engine.data import clip_config
    clip = VideoDataset([(str(a), 0)], CLASSES, train=False, clip=clip_config(config))[0]["video"]
    with torch.no_grad():
        pooled = model.avgpool(model.features(clip.unsqueeze(0))).flatten(1)
    np.testing.assert_allclose(first, pooled.numpy(), rtol=1e-4, atol=1e-5)

    # The same stem twice in one folder would share a file: an error before anything is written.
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "clash"), *overrides, "--videos", str(a),
                 str(folder / "a" / "clip.avi")]) != 0
    error = capsys.readouterr().err
    assert "clip.mp4" in error and "clip.avi" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "clash").exists()


def test_a_video_that_gives_no_features_fails_the_run_and_files_have_no_label(s3d_run, tmp_path, capsys):
    folder, _, _, main, common, overrides = s3d_run
    a, b = folder / "a" / "clip.mp4", folder / "b" / "clip.mp4"
    status = main([*common, "--out", str(tmp_path / "split"), "--format", "split", *overrides, "--videos",
                   str(a), str(folder / "broken.mp4"), str(b)])
    output = capsys.readouterr()
    assert status != 0 and "broken.mp4" in output.err and "features written" not in output.out
    with (tmp_path / "split" / "videos_index.csv").open() as handle:      # the readable two are written
        rows = list(csv.DictReader(handle))
    assert [row["video"] for row in rows] == [str(a), str(b)] and [row["label"] for row in rows] == ["", ""]
    assert np.load(tmp_path / "split" / "videos_features.npy").shape == (2, 1, 1024)

    assert main([*common, "--out", str(tmp_path / "none"), *overrides, "--videos", str(folder / "missing.mp4")]) != 0
    assert "missing.mp4" in capsys.readouterr().err and not (tmp_path / "none").exists()
