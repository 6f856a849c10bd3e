"""What the engine must not do silently: test another network than the checkpoint's, keep an unvalidated
best.pt, hang or leak on an error, or accept settings that cannot work."""

import importlib
import multiprocessing
import subprocess
import sys
import types
import warnings

import pytest
import torch
from torch import nn

import softpool3d as sp
from softpool3d.engine import ConfigError, load_checkpoint, model_from_checkpoint, run_test, save_checkpoint, train
from softpool3d.engine.checkpoint import set_rng_state
from softpool3d.datasets.io import available_backends
from softpool3d.engine.config import to_plain
from softpool3d.models import build_model, has_downsampling_pools, list_models
from softpool3d.ops import _registration

from helpers import ROOT, tiny, torchrun

CLASSES = ["MoveLeft", "MoveRight", "MoveUp"]
train_module = importlib.import_module("softpool3d.engine.train")   # the package exports the function train


# ---------------------------------------------------------------- the tested network is the checkpoint's


def _checkpoint(config, path, **model_settings):
    """A checkpoint of an untrained r3d_10 whose stored config has ``model_settings``."""
    trained = to_plain(config)
    trained["model"].update(model_settings)
    model = build_model("r3d_10", num_classes=3, pool=trained["model"]["pool"],
                        head_pool=trained["model"]["head_pool"])
    save_checkpoint({"model": model.state_dict(), "config": trained, "classes": CLASSES}, path)
    return model


def test_test_config_that_disagrees_with_the_checkpoint_is_an_error(synth, tmp_path):
    config = tiny(synth, tmp_path, "test.views=1x1", f"test.output_dir={tmp_path}/report")   # model.pool=soft
    _checkpoint(config, tmp_path / "max.pt", pool="max")
    with pytest.raises(ConfigError, match="model.pool: .*max.pt was trained with 'max' but the config says 'soft'"):
        run_test(config, tmp_path / "max.pt")
    with pytest.raises(ConfigError, match="model.head_pool: .* trained with 'avg' but the config says 'soft'"):
        model_from_checkpoint(tmp_path / "max.pt", ["model.pool=max", "model.head_pool=soft"])
    overrides = [f"data.root={synth}", "model.name=r3d_10", "data.clip_len=4", "data.frame_interval=1",
                 "data.short_side=32", "data.crop_size=32", "data.num_workers=0", "test.views=1x1",
                 "train.progress=false", f"test.output_dir={tmp_path}/report"]
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "test.py"), "--config",
                           str(ROOT / "configs" / "synthmotion.yaml"), "--checkpoint", str(tmp_path / "max.pt"),
                           *overrides], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "error: model.pool:" in done.stderr and "'max'" in done.stderr and "'soft'" in done.stderr


def test_testing_runs_the_checkpoints_own_network(synth, tmp_path):
    config = tiny(synth, tmp_path, "model.pool=max", "test.views=1x1", f"test.output_dir={tmp_path}/report")
    torch.manual_seed(0)
    expected = _checkpoint(config, tmp_path / "max.pt", pool="max").eval()
    model, _, classes = model_from_checkpoint(tmp_path / "max.pt")
    assert any(isinstance(m, nn.MaxPool3d) for m in model.modules())
    assert not any(isinstance(m, sp.SoftPool3d) for m in model.modules())
    result, folder, _ = run_test(config, tmp_path / "max.pt")
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected(x))
    assert classes == CLASSES and result["num_videos"] == 9


# ---------------------------------------------------------------- the training loop


def test_best_pt_only_ever_holds_a_validated_epoch(synth, tmp_path, monkeypatch):
    writes = []
    real_save = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint",
                        lambda state, path: writes.append((path.name, state["epoch"])) or real_save(state, path))
    folder = train(tiny(synth, tmp_path, "train.epochs=4", "train.val_every=2"))
    state = load_checkpoint(folder / "best.pt")
    validated = {r["epoch"] for r in load_checkpoint(folder / "last.pt")["history"] if "val_top1" in r}
    assert validated == {2, 4}
    assert [epoch for name, epoch in writes if name == "best.pt"][0] == 2
    assert all(epoch in validated for name, epoch in writes if name == "best.pt")
    assert state["best_epoch"] == state["epoch"] in validated
    assert state["best_top1"] == state["history"][state["best_epoch"] - 1]["val_top1"]
    assert load_checkpoint(folder / "last.pt")["best_epoch"] == state["best_epoch"]


def test_an_exception_tears_down_workers_writer_and_process_group(synth, tmp_path, monkeypatch):
    closed = []

    class Writer(train_module.SummaryWriter):
        def close(self):
            closed.append(True)
            super().close()

    calls = []

    def failing_step(run):
        calls.append(run.step)
        if len(calls) == 2:
            raise RuntimeError("boom in step 2")
        real_step(run)

    real_step = train_module.optimizer_step
    monkeypatch.setattr(train_module, "SummaryWriter", Writer)
    monkeypatch.setattr(train_module, "optimizer_step", failing_step)
    with pytest.raises(RuntimeError, match="boom in step 2"):
        train(tiny(synth, tmp_path, "data.num_workers=2"))
    assert closed == [True]
    assert multiprocessing.active_children() == []      # the DataLoader's workers are gone already
    assert not torch.distributed.is_initialized()


def test_checkpoints_carry_the_rng_states(synth, tmp_path):
    folder = train(tiny(synth, tmp_path, "train.stop_after_steps=2"))
    state = load_checkpoint(folder / "last.pt")
    assert state["epoch"] == 0 and state["batch_in_epoch"] == 2
    saved = state["rng"]
    torch.manual_seed(123)
    set_rng_state(saved)
    assert torch.equal(torch.get_rng_state(), saved["torch"])
    first = torch.rand(4)
    set_rng_state(saved)
    assert torch.equal(torch.rand(4), first)


DESYNC = """
import importlib, os, sys
sys.path.insert(0, {root!r})
from softpool3d.engine import load_config, train
train_module = importlib.import_module("softpool3d.engine.train")
real = train_module.build_optimizer

def skewed(config, model, world_size):
    optimizer = real(config, model, world_size)
    if int(os.environ["RANK"]) == 1:          # same gradients, another step size: the weights drift apart
        for group in optimizer.param_groups:
            group["lr"] *= 3
    return optimizer

train_module.build_optimizer = skewed
try:
    train(load_config(sys.argv[1], sys.argv[2:]))
except RuntimeError as error:
    print(f"rank {{os.environ['RANK']}} stopped: {{error}}", flush=True)
    raise
"""


def test_ddp_out_of_sync_stops_every_rank_without_hanging(synth, tmp_path):
    script = tmp_path / "desync.py"
    script.write_text(DESYNC.format(root=str(ROOT)))
    overrides = [f"data.root={synth}", f"output_dir={tmp_path}", "name=ddp", "model.name=r3d_10",
                 "data.clip_len=4", "data.frame_interval=1", "data.short_side=32", "data.crop_size=32",
                 "data.num_workers=0", "train.batch_size=2", "train.epochs=1", "train.progress=false",
                 "test.batch_size=2", "test.views=1x1", "train.val_every=0"]
    done = torchrun(str(script), str(ROOT / "configs" / "synthmotion.yaml"), *overrides, cwd=tmp_path, timeout=300)
    assert done.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank} stopped: the processes' weights differ after epoch 1" in done.stdout, done.stdout


def test_fp16_on_the_cpu_is_a_one_line_error(synth, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--config",
                           str(ROOT / "configs" / "synthmotion.yaml"), f"data.root={synth}", "train.amp=fp16",
                           "train.device=cpu", f"output_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: train.amp=fp16 needs a CUDA GPU")
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- clear errors and warnings


def test_cuda_tensor_without_triton_warns_once(monkeypatch):
    monkeypatch.setattr(_registration, "_triton_available", lambda: False)
    _registration._warn_no_triton.cache_clear()
    # No GPU here: a stand-in that carries what backend_for reads of a CUDA tensor.
    cuda_tensor = types.SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="Triton is not installed.*reference.*memory.*pip install triton"):
        assert _registration.backend_for(cuda_tensor) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _registration.backend_for(cuda_tensor) == "reference"     # once only
    _registration._warn_no_triton.cache_clear()


def test_build_model_reports_only_argument_errors_as_such(monkeypatch):
    with pytest.raises(TypeError, match="r3d_18: .*unexpected keyword argument 'depth'.*takes num_classes"):
        build_model("r3d_18", depth=3)

    def broken_builder(*, num_classes: int = 3, pool: str = "soft", head_pool: str = "avg", dropout: float = 0.0):
        return len(None)     # a TypeError inside the builder: a bug, not a bad argument

    monkeypatch.setitem(sys.modules["softpool3d.models"].MODELS, "broken", broken_builder)
    with pytest.raises(TypeError, match="object of type 'NoneType' has no len") as info:
        build_model("broken", num_classes=3)
    assert "its builder takes" not in str(info.value)
    assert info.traceback[-1].name == "broken_builder"


@pytest.mark.parametrize("name", list_models("video"))
def test_pool_warns_where_it_changes_nothing(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kinds = {pool: build_model(name, num_classes=3, pool=pool) for pool in ("soft", "max")}
    with_soft = any(isinstance(m, (sp.SoftPool3d, sp.SoftPool2d)) for m in kinds["soft"].modules())
    with_max = any(isinstance(m, (nn.MaxPool3d, nn.MaxPool2d)) for m in kinds["max"].modules())
    assert has_downsampling_pools(name) == with_soft == with_max
    assert (name in list_models("video", downsampling_pools=True)) == with_soft
    sys.modules["softpool3d.models"]._warned.discard(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(name, num_classes=3, pool="soft")
        build_model(name, num_classes=3, pool="max")
    messages = [str(w.message) for w in caught if "changes nothing" in str(w.message)]
    if with_soft:
        assert messages == []
    else:
        assert len(messages) == 1 and name in messages[0] and "head_pool is its only SoftPool site" in messages[0]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_start_is_one_line_and_leaves_an_existing_run_alone(synth, tmp_path):
    folder = train(tiny(synth, tmp_path, "train.stop_after_steps=1"))
    before = _snapshot(folder)
    assert {"config.yaml", "last.pt"} <= {p.name for p in before}
    overrides = [f"data.root={synth}", f"output_dir={tmp_path}", "name=tiny", "model.name=r3d_10",
                 "data.clip_len=4", "data.frame_interval=1", "data.short_side=32", "data.crop_size=32",
                 "data.num_workers=2", "train.batch_size=4", "train.progress=false"]
    bad = {"model.name=r3d_19": "error: model.name='r3d_19' is not one of c3d, "}
    if "decord" not in available_backends():
        bad["data.backend=decord"] = "error: data.backend=decord is not available here (pip install decord)"
    for setting, message in bad.items():
        done = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--config",
                               str(ROOT / "configs" / "synthmotion.yaml"), *overrides, setting],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(message), setting
        assert _snapshot(folder) == before, setting
    # A start that fails in its first step (i3d_r50 cannot pool a 1-frame clip) rewrites nothing either.
    with pytest.raises(ValueError, match="output size would be"):
        train(tiny(synth, tmp_path, "model.name=i3d_r50", "data.clip_len=1"))
    after = _snapshot(folder)
    assert {name: after[name] for name in before} == before
    assert all(name.parts[0] == "tb" for name in set(after) - set(before))    # only a new TensorBoard file
