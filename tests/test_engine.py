"""Training and testing: the run folder, resume, data checks, multi-view test metrics, prediction, Study 2
and DDP (torchrun, gloo). Everything runs on a tiny SynthMotion written with PyAV."""

import csv
import importlib
import json
import logging
import math
import shutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import scipy.stats
import torch

from softpool3d.engine import DataError, load_checkpoint, load_config, run_test, save_checkpoint, train
from softpool3d.engine import distributed, host
from softpool3d.engine.builders import build_optimizer
from softpool3d.engine.config import to_plain
from softpool3d.engine.evaluate import validate
from softpool3d.engine.data import EpochOrder, SeededSamples, build_dataset, loader, stop_workers, train_sampler
from softpool3d.engine.study import run_study
from softpool3d.models import build_model

from helpers import ROOT, tiny, torchrun

train_module = importlib.import_module("softpool3d.engine.train")     # the package exports the function train

# ---------------------------------------------------------------- training on a tiny SynthMotion


def test_train_writes_the_run_folder(synth, tmp_path):
    folder = train(tiny(synth, tmp_path))
    names = {p.name for p in folder.iterdir()}
    assert {"config.yaml", "last.pt", "best.pt", "metrics.jsonl", "curves.png", "tb"} <= names
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert all(line["val_videos"] == 9 and line["ranks_in_sync"] for line in lines)
    state = load_checkpoint(folder / "last.pt")
    assert state["epoch"] == 2 and state["step"] == 6 and state["classes"] == ["MoveLeft", "MoveRight", "MoveUp"]
    assert load_config(folder / "config.yaml").model.name == "r3d_10"


def test_a_fine_tune_from_a_checkpoint_takes_its_normalisation_unless_the_config_sets_one(synth, tmp_path, caplog,
                                                                                          monkeypatch):
    from softpool3d.datasets.transforms import KINETICS_MEAN, KINETICS_STD
    from softpool3d.engine.data import clip_config
    from softpool3d.models.pretrained import PretrainedError, cache_dir

    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    pre = train(tiny(synth, tmp_path / "pre", "data.mean=[0.3,0.4,0.5]", "data.std=[0.2,0.25,0.3]", "train.epochs=1"))
    checkpoint = pre / "last.pt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["normalisation"] == {"mean": list(mean), "std": list(std)}
    assert state["clip"] == {"clip_len": 4, "frame_interval": 1, "crop_size": 32, "short_side": 32}

    # No data.mean / data.std: the checkpoint's, in the transform training builds, said once.
    with caplog.at_level(logging.INFO, logger="softpool3d"):
        fine = tiny(synth, tmp_path / "ft", f"model.pretrained={checkpoint}", "train.stop_after_steps=1")
        assert fine.data.mean is None and fine.data.std is None
        clip = build_dataset(fine, "train").clip
        assert (clip.mean, clip.std) == (mean, std)
        said = f"normalising with mean {mean}, std {std} from {checkpoint}; it was trained on 4-frame 32x32 clips"
        assert caplog.text.count(said) == 1 and "differs" not in caplog.text
        # The fine-tune records what it used (mid-epoch checkpoints too): a fine-tune of it takes the same.
        assert load_checkpoint(train(fine) / "last.pt")["normalisation"] == {"mean": list(mean), "std": list(std)}
        assert caplog.text.count(said) == 1

    # data.mean set: the config wins for the mean, with a warning; the std still comes from the checkpoint.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="softpool3d"):
        clip = clip_config(tiny(synth, tmp_path, f"model.pretrained={checkpoint}", "data.mean=[0.5,0.5,0.5]",
                                "data.clip_len=8"))
    assert (clip.mean, clip.std) == ((0.5, 0.5, 0.5), std)
    assert f"the config differs from what {checkpoint} was trained with: data.mean (0.5, 0.5, 0.5) " \
           f"(the checkpoint's: {mean}); data.clip_len 8 (the checkpoint's: 4)" in caplog.text

    # An older checkpoint, without the entries: its config's data.mean / data.std; none there: the defaults.
    old = {key: value for key, value in state.items() if key not in ("normalisation", "clip")}
    save_checkpoint(old, tmp_path / "old.pt")
    clip = clip_config(tiny(synth, tmp_path, f"model.pretrained={tmp_path / 'old.pt'}"))
    assert (clip.mean, clip.std) == (mean, std)
    old["config"]["data"].update(mean=None, std=None)
    save_checkpoint(old, tmp_path / "older.pt")
    clip = clip_config(tiny(synth, tmp_path, f"model.pretrained={tmp_path / 'older.pt'}"))
    assert (clip.mean, clip.std) == (KINETICS_MEAN, KINETICS_STD)

    # A URL: read only once it is in torch.hub's cache (nothing is fetched to find the normalisation).
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    url = tiny(synth, tmp_path, "model.pretrained=https://example.invalid/weights/pre.pt")
    assert clip_config(url).mean == KINETICS_MEAN and not cache_dir().exists()
    cache_dir().mkdir(parents=True)
    shutil.copy(checkpoint, cache_dir() / "pre.pt")
    assert clip_config(url).mean == mean

    # A checkpoint that is gone (e.g. testing a fine-tune after deleting where it started): said, not silent.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="softpool3d"):
        assert clip_config(tiny(synth, tmp_path, f"model.pretrained={tmp_path / 'gone.pt'}")).mean == KINETICS_MEAN
    assert f"model.pretrained={tmp_path / 'gone.pt'} is not there" in caplog.text

    # A file that cannot be read is the same clear error as when its weights are loaded.
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError, match="bad.pt cannot be read"):
        clip_config(tiny(synth, tmp_path, f"model.pretrained={tmp_path / 'bad.pt'}"))


def test_resume_matches_an_uninterrupted_run(synth, tmp_path):
    whole = train(tiny(synth, tmp_path / "a"))
    # Stop mid-epoch 1 (after 4 of 6 steps), then resume from last.pt.
    stopped = train(tiny(synth, tmp_path / "b", "train.stop_after_steps=4"))
    assert load_checkpoint(stopped / "last.pt")["step"] == 4
    resumed = train(tiny(synth, tmp_path / "b", "resume=auto"))
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]



def test_resume_after_an_epoch_is_exact_with_gradient_accumulation(synth, tmp_path):
    # 3 batches per epoch and a step every 2: the third batch's gradient must be stepped (or dropped)
    # within its epoch, never carried into the next one, where a resumed run would not have it.
    # A constant LR (no warmup, min_lr = lr) gives 1 and 2 epochs the same schedule.
    settings = ("train.accumulate=2", "optim.warmup_epochs=0", "optim.min_lr=0.05", "train.val_every=0")
    whole = train(tiny(synth, tmp_path / "a", *settings))
    train(tiny(synth, tmp_path / "b", *settings, "train.epochs=1"))
    resumed = train(tiny(synth, tmp_path / "b", *settings, "resume=auto"))
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(resumed / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 4     # 2 steps per epoch: 2 batches, then 1

def test_persistent_workers_train_on_each_epochs_clips(synth, tmp_path):
    # Training workers are forked once and keep their own copy of the dataset: the epoch must travel
    # with each sampled key, or epoch 2 would repeat epoch 1's clips (and differ from num_workers=0).
    config = tiny(synth, tmp_path / "keys", "data.num_workers=2")
    seeded = SeededSamples(build_dataset(config, "train"), config.seed)
    order = EpochOrder(train_sampler(seeded, config, 0, 1))
    batches = loader(seeded, order, 4, config, train=True)
    try:
        epochs = []
        for epoch in (0, 1):
            order.start(epoch)
            epochs.append([(batch["video"], batch["label"]) for batch in batches])
        workers = batches._iterator._workers
        assert len(workers) == 2 and all(w.is_alive() for w in workers)
    finally:
        stop_workers(batches)
    assert not any(w.is_alive() for w in workers)
    for epoch, got in enumerate(epochs):
        order.start(epoch)
        keys = list(order)
        for i, (video, label) in enumerate(got):
            expected = [seeded[key] for key in keys[4 * i:4 * i + 4]]
            assert torch.equal(video, torch.stack([e["video"] for e in expected]))
            assert label.tolist() == [e["label"] for e in expected]
    assert not torch.equal(epochs[0][0][0], epochs[1][0][0])

    inline = load_checkpoint(train(tiny(synth, tmp_path / "inline")) / "last.pt")
    forked = load_checkpoint(train(tiny(synth, tmp_path / "forked", "data.num_workers=2")) / "last.pt")
    for key in inline["model"]:
        assert torch.equal(inline["model"][key], forked["model"][key]), key


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_memory_stays_in_the_heap_until_released():
    # Training on the CPU (train.reuse_freed_memory) keeps freed blocks instead of unmapping them,
    # so the next step's activations are not page-faulted and zeroed by the kernel again.
    def resident() -> int:
        return int(re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

    assert host.reuse_freed_memory()
    block = torch.ones(64 * 2**20 // 4)          # 64 MiB, above glibc's largest mmap threshold
    held = resident()
    del block
    kept = resident()
    assert kept > held - 16 * 2**20
    # Before workers fork, the kept pages go back to the kernel, so that the workers do not share them.
    host.release_freed_memory()
    assert resident() < kept - 48 * 2**20


def test_optimizers_use_the_fused_implementation(synth, tmp_path):
    model = build_model("r3d_10", num_classes=3, pool="soft")
    for name in ("adamw", "sgd"):
        optimizer = build_optimizer(tiny(synth, tmp_path, f"optim.name={name}"), model, 1)
        assert optimizer.defaults["fused"], name


def test_data_problems_fail_before_training(synth, tmp_path):
    with pytest.raises(DataError, match="data.generate=true"):
        train(tiny(tmp_path / "nowhere", tmp_path, "data.generate=false"))
    (tmp_path / "train.txt").write_text(f"{synth}/videos/MoveLeft/v_MoveLeft_g02_c01.mp4 0\n"
                                        f"{synth}/videos/MoveUp/v_MoveUp_g02_c01.mp4 2\n")
    (tmp_path / "val.txt").write_text(f"{synth}/videos/MoveLeft/v_MoveLeft_g01_c01.mp4 0\n")
    config = tiny(synth, tmp_path, "data.dataset=list", "data.root=/", f"data.train_list={tmp_path}/train.txt",
                  f"data.val_list={tmp_path}/val.txt")
    with pytest.raises(DataError, match="train and val class lists differ"):
        train(config)
    config = tiny(synth, tmp_path, "data.dataset=ucf101", f"data.root={synth}/videos")
    with pytest.raises(DataError, match="data.annotations must be set"):
        train(config)


# ---------------------------------------------------------------- testing and prediction


def _hand_metrics(probs: list[list[float]], labels: list[int]) -> dict:
    """Top-k and per-class accuracy with plain Python."""
    def top(k, rows, targets):
        hits = 0
        for row, target in zip(rows, targets):
            ranked = sorted(range(len(row)), key=lambda c: -row[c])[:k]
            hits += target in ranked
        return hits / len(rows)

    video = [[sum(view[c] for view in views) / len(views) for c in range(len(views[0]))] for views in probs]
    clips = [view for views in probs for view in views]
    clip_labels = [label for label, views in zip(labels, probs) for _ in views]
    per_class = {}
    for c in sorted(set(labels)):
        rows = [(row, t) for row, t in zip(video, labels) if t == c]
        per_class[c] = top(1, [r for r, _ in rows], [t for _, t in rows])
    return {"clip_top1": top(1, clips, clip_labels), "clip_top5": top(3, clips, clip_labels),
            "video_top1": top(1, video, labels), "video_top5": top(3, video, labels),
            "mean_class_acc": sum(per_class.values()) / len(per_class), "per_class": per_class}


def test_test_metrics_match_hand_computation_with_a_skipped_video(synth, tmp_path):
    # A list dataset of four good videos and one broken file: the broken one is skipped and reported.
    good = sorted((synth / "videos").rglob("*_g01_*.mp4"))[:4]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    classes = ["MoveLeft", "MoveRight", "MoveUp"]
    rows = [(p, classes.index(p.parent.name)) for p in good] + [(broken, 1)]
    (tmp_path / "val.txt").write_text("".join(f"{p} {label}\n" for p, label in rows))
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    config = tiny(synth, tmp_path, "data.dataset=list", "data.root=/", f"data.val_list={tmp_path}/val.txt",
                  f"data.train_list={tmp_path}/val.txt", f"data.classes={tmp_path}/classes.txt", "test.views=2x3",
                  f"test.output_dir={tmp_path}/report")
    torch.manual_seed(0)
    model = build_model("r3d_10", num_classes=3, pool="soft").eval()
    save_checkpoint({"model": model.state_dict(), "config": to_plain(config), "classes": classes}, tmp_path / "m.pt")

    result, folder, names = run_test(config, tmp_path / "m.pt")
    assert names == classes

    dataset = build_dataset(config, "test", views=(2, 3), on_error="skip")
    probs, labels = [], []
    with torch.no_grad():
        for i in range(4):
            item = dataset[i]
            probs.append(torch.softmax(model(item["video"]), 1).tolist())
            labels.append(item["label"])
    expected = _hand_metrics(probs, labels)
    for key in ("clip_top1", "clip_top5", "video_top1", "video_top5", "mean_class_acc"):
        assert result[key] == pytest.approx(expected[key]), key
    assert result["num_videos"] == 4 and result["num_views"] == 6 and result["num_skipped"] == 1
    assert result["skipped"][0]["path"] == str(broken)
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["num_skipped"] == 1 and 0 <= saved["video_top1"] <= 1
    assert saved["per_class_acc"]["MoveLeft"] == pytest.approx(expected["per_class"][0])
    with (folder / "predictions.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["video"] for row in table] == [str(p) for p in good]
    video = [[sum(v[c] for v in views) / 6 for c in range(3)] for views in probs]
    for row, scores in zip(table, video):
        assert row["top1"] == classes[max(range(3), key=lambda c: scores[c])]
        assert float(row["score1"]) == pytest.approx(max(scores), abs=1e-4)
    assert (folder / "confusion.png").stat().st_size > 1000


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run tools/<name> as a user does."""
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *args], capture_output=True, text=True,
                          timeout=600)


def test_predict_prints_top_classes(synth, tmp_path):
    folder = train(tiny(synth, tmp_path, "train.epochs=1"))
    video = sorted((synth / "videos" / "MoveUp").glob("*.mp4"))[0]
    done = _tool("predict.py", str(video), "--checkpoint", str(folder / "best.pt"))
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.splitlines()
    assert out[0] == str(video) and len(out) == 4                     # 3 classes
    probabilities = [float(line.split("%")[0]) for line in out[1:]]
    assert sum(probabilities) == pytest.approx(100, abs=0.05) and probabilities == sorted(probabilities, reverse=True)
    done = _tool("predict.py", str(tmp_path / "missing.mp4"), "--checkpoint", str(folder / "best.pt"))
    assert done.returncode == 1 and "missing.mp4: cannot read" in done.stderr


def test_runs_with_one_seed_start_from_the_same_weights_whatever_the_pool(synth, tmp_path):
    # What makes Study 2's comparisons paired: the seed fixes the initial weights (and the data order),
    # and pools have no weights.
    ctx = distributed.setup("cpu")
    initial = {}
    for pool in ("soft", "max", "avg"):
        run = train_module.prepare(tiny(synth, tmp_path / pool, f"model.pool={pool}"), ctx)
        initial[pool] = run.model.state_dict()
        stop_workers(run.batches)
    for key, value in initial["soft"].items():
        assert torch.equal(value, initial["max"][key]) and torch.equal(value, initial["avg"][key]), key


def test_pooling_study_trains_each_run_once_and_summarises(synth, tmp_path):
    out = tmp_path / "study"
    recipe = str(ROOT / "configs" / "synthmotion.yaml")
    overrides = [f"data.root={synth}", "data.clip_len=4", "data.frame_interval=1", "data.short_side=32",
                 "data.crop_size=32", "data.num_workers=0", "train.batch_size=4", "train.epochs=1", "test.batch_size=4"]

    def study(seeds=(0, 1), extra=(), keep=False):
        return run_study(recipe, out, ["r3d_10"], ["soft", "avg"], seeds, [*overrides, *extra], keep)

    assert study(keep=True)["runs"]
    report = json.loads((out / "study_pooling.json").read_text())
    runs = report["runs"]
    assert [(r["pool"], r["seed"]) for r in runs] == [("soft", 0), ("avg", 0), ("soft", 1), ("avg", 1)]
    for run in runs:
        folder = out / f"r3d_10_{run['pool']}_s{run['seed']}"
        tested = json.loads((folder / "test" / "metrics.json").read_text())
        assert run["video_top1"] == tested["video_top1"] and tested["num_videos"] == 9
        state = load_checkpoint(folder / "last.pt")
        assert (state["config"]["model"]["pool"], state["config"]["seed"]) == (run["pool"], run["seed"])
    # Seeds give different initial weights, hence different trained ones.
    s0, s1 = (load_checkpoint(out / f"r3d_10_soft_s{k}" / "last.pt")["model"] for k in (0, 1))
    assert not torch.equal(s0["stem.0.weight"], s1["stem.0.weight"])
    for row in report["summary"]:
        mine = [100 * r["video_top1"] for r in runs if r["pool"] == row["pool"]]
        assert row["top1_mean"] == pytest.approx(sum(mine) / 2)
        assert row["top1_std"] == pytest.approx(abs(mine[0] - mine[1]) / math.sqrt(2))
    table = (out / "study_pooling.md").read_text().splitlines()
    assert table[2].startswith("| r3d_10 | soft |") and table[3].startswith("| r3d_10 | avg |")
    [paired] = report["paired"]                                      # soft - avg; no max runs here
    soft = [100 * r["video_top1"] for r in runs if r["pool"] == "soft"]
    avg = [100 * r["video_top1"] for r in runs if r["pool"] == "avg"]
    assert (paired["pool"], paired["baseline"], paired["seeds"]) == ("soft", "avg", [0, 1])
    assert paired["diffs"] == pytest.approx([s - a for s, a in zip(soft, avg)])
    if paired["p_value"] is not None:
        assert paired["p_value"] == pytest.approx(scipy.stats.ttest_rel(soft, avg).pvalue)
    assert table[7].startswith("| r3d_10 | soft − avg | s0: ") and paired["reading"] in table[7]
    assert (out / "study_pooling.png").stat().st_size > 1000
    # A second call finds every test report and trains nothing again.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*.pt")}
    assert len(stamps) == 4 and study()    # last.pt only: the study never validates
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.pt")} == stamps
    assert json.loads((out / "study_pooling.json").read_text())["summary"] == report["summary"]
    # Without --keep-checkpoints a new run keeps its report and drops its checkpoints.
    assert study(seeds=(2,))
    assert (out / "r3d_10_soft_s2" / "test" / "metrics.json").is_file()
    assert not list((out / "r3d_10_soft_s2").glob("*.pt"))
    # Never mixes runs of two recipes; the error names the setting that differs.
    with pytest.raises(ValueError, match=r"other settings than these \(optim.lr: 0.002 there, 0.01 here\)"):
        study(extra=["optim.lr=0.01"])
    done = _tool("study_pooling.py", "--models", "r3d_10", "--pools", "soft", "avg", "--seeds", "0", "1", "--out",
                 str(out), *overrides)                                  # the tool finds every run done
    assert done.returncode == 0 and "| r3d_10 | soft |" in done.stdout, done.stderr[-2000:]


# ---------------------------------------------------------------- torchrun


def test_torchrun_two_processes_train_in_sync_and_test_counts_each_video_once(synth, tmp_path):
    overrides = [f"data.root={synth}", f"output_dir={tmp_path}", "name=ddp", "model.name=r3d_10",
                 "data.clip_len=4", "data.frame_interval=1", "data.short_side=32", "data.crop_size=32",
                 "data.num_workers=0", "train.batch_size=2", "train.epochs=1", "train.progress=false",
                 "test.batch_size=2", "test.views=1x1"]
    done = torchrun("train", "--config", "synthmotion", *overrides, cwd=tmp_path)   # torchrun -m softpool3d train
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["ranks_in_sync"] is True
    assert record["step"] == 3                  # 12 videos / (2 per process x 2 processes)
    assert record["val_videos"] == 9            # sharded without padding: each video once
    state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    model = build_model("r3d_10", num_classes=3, pool="soft")
    model.load_state_dict(state["model"])
    # Both ranks validated with the checkpoint's model (rank 0's BatchNorm statistics included):
    # the saved model alone gives the same validation.
    config = load_config(ROOT / "configs" / "synthmotion.yaml", overrides)
    alone = validate(model, build_dataset(config, "val", on_error="skip"), config, distributed.setup("cpu"))
    assert alone["val_videos"] == 9
    assert alone["val_loss"] == pytest.approx(record["val_loss"], rel=1e-5, abs=1e-6)
    assert alone["val_top1"] == record["val_top1"]

    done = torchrun("test.py", "--config", str(ROOT / "configs" / "synthmotion.yaml"), "--checkpoint",
                     str(tmp_path / "ddp" / "last.pt"), *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "test" / "metrics.json").read_text())
    assert metrics["num_videos"] == 9 and metrics["num_skipped"] == 0   # 9 does not divide by 2
    assert "video_top1" in done.stdout
    assert math.isclose(metrics["video_top1"], metrics["clip_top1"])     # one view per video
