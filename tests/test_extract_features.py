"""tools/extract_features.py: the features are the network's own pooled activations, and its classifier on
them gives tools/test.py's scores."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch

from softpool3d.engine import save_checkpoint
from softpool3d.engine.config import to_plain
from softpool3d.engine.data import build_dataset
from softpool3d.engine.features import classifier_of
from softpool3d.models import build_model

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
    assert done.returncode == 0 and not list((tmp_path / "x").rglob("*.npy"))    # an unreadable file is skipped
