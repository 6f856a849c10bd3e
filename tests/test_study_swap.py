"""Study 3 (softpool3d study-swap) end to end on a tiny SynthMotion: the real training, test and hardness code."""

import json
from pathlib import Path

import pytest
import torch

from softpool3d.engine import load_checkpoint
from softpool3d.engine.inference import model_from_checkpoint
from softpool3d.engine.swap import run_swap_study, window_hardness
from softpool3d.nn import SoftPool3d

from helpers import ROOT

RECIPE = str(ROOT / "configs" / "synthmotion.yaml")
# The main job shrunk to the synth6 fixture: 1 epoch of 4-frame 32x32 clips, batch 4 (its 1x1 test views stay).
SHRINK = ["data.clip_len=4", "data.frame_interval=1", "data.short_side=32", "data.crop_size=32",
          "data.num_workers=0", "train.batch_size=4", "train.epochs=1", "test.batch_size=4", "data.generate=false"]


def test_window_hardness_lies_between_uniform_and_max():
    pool = SoftPool3d(3, 2, 1)
    x = torch.randn(2, 3, 5, 6, 6)
    top, window = window_hardness(x, pool)
    assert window == 27 and top.shape == (2, 3, 3, 3, 3)
    assert top.min() >= 1 / 27 - 1e-6 and top.max() <= 1 + 1e-6
    assert torch.allclose(window_hardness(torch.zeros(1, 1, 4, 4, 4), SoftPool3d(2))[0], torch.tensor(1 / 8))
    # The corner window holds 2x2x2 real elements (padding excluded): equal inputs give 1/8, not 1/27.
    assert torch.isclose(window_hardness(torch.zeros(1, 1, 3, 3, 3), pool)[0][0, 0, 0, 0, 0], torch.tensor(1 / 8))
    peaks = torch.zeros(1, 1, 4, 4, 4)
    peaks[..., ::2, ::2, ::2] = 100                        # one large value per 2x2x2 window: max pooling
    assert torch.allclose(window_hardness(peaks, SoftPool3d(2))[0], torch.ones(1, 1, 2, 2, 2))


def test_swap_study_swaps_only_pools_measures_hardness_and_resumes(synth6, tmp_path):
    out = tmp_path / "swap"
    overrides = [f"data.root={synth6}", *SHRINK, "data.keep_classes=[MoveLeft,MoveRight,MoveUp,MoveDown]"]
    report = run_swap_study(RECIPE, out, seeds=[0], ft_epochs=[1], clips=5, overrides=overrides,
                            keep_checkpoints=True)
    arms = {(r["ft_epochs"], r["pool"]) for r in report["runs"]}
    assert arms == {(0, "max"), (0, "soft"), (1, "max"), (1, "soft")}
    assert report["ft_lr"] == pytest.approx(2e-4)          # a tenth of the recipe's optim.lr
    # The swapped network: the max run's weights unchanged, only the pool module differs.
    max_model, _, _ = model_from_checkpoint(out / "r3d_10_max_s0" / "last.pt")
    soft_model, config, _ = model_from_checkpoint(out / "r3d_10_max_s0_swapped" / "swapped.pt")
    assert config.model.pool == "soft"
    a, b = max_model.state_dict(), soft_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    changed = [n for (n, m), (_, s) in zip(max_model.named_modules(), soft_model.named_modules())
               if type(m) is not type(s)]
    assert changed == ["pool"] and isinstance(soft_model.pool, SoftPool3d)
    # Fine-tunes start from the max checkpoint, with its learning rate and no warmup.
    ft = load_checkpoint(out / "r3d_10_max_s0_ft1_soft" / "last.pt")
    assert ft["config"]["model"]["pretrained"] == str((out / "r3d_10_max_s0" / "last.pt").resolve())
    assert ft["config"]["optim"]["lr"] == pytest.approx(2e-4) and ft["config"]["optim"]["warmup_epochs"] == 0
    # Hardness per site, swapped (0) and after the soft fine-tune (1), within [1/window, 1].
    sites = report["hardness"]
    assert [(s["site"], s["ft_epochs"]) for s in sites] == [("pool", 0), ("pool", 1)]
    assert all(s["window"] == 27 and 1 / 27 <= s["mean"] <= 1 for s in sites)
    assert report["paired"][0]["ft_epochs"] == 0 and len(report["paired"]) == 2
    table = (out / "study_swap.md").read_text()
    assert "soft (swapped, no training)" in table and "| pool | 27 | swapped, no training |" in table
    assert (out / "study_swap.png").stat().st_size > 1000
    assert json.loads((out / "study_swap.json").read_text())["hardness"] == sites
    # A rerun trains nothing: every step's result is reused.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    again = run_swap_study(RECIPE, out, seeds=[0], ft_epochs=[1], clips=5, overrides=overrides)
    assert again["runs"] == report["runs"] and again["hardness"] == sites
    assert {p: p.stat().st_mtime_ns for p in stamps if p.exists()} == {p: t for p, t in stamps.items() if p.exists()}
    assert not (out / "r3d_10_max_s0_ft1_soft" / "last.pt").exists()    # dropped without --keep-checkpoints
    assert (out / "r3d_10_max_s0" / "last.pt").exists()                 # the fine-tunes' start is kept
    with pytest.raises(ValueError, match="--ft-epochs must be >= 1"):
        run_swap_study(RECIPE, out, seeds=[0], ft_epochs=[0], overrides=overrides)
    with pytest.raises(ValueError, match="--ft-lr must be > 0"):
        run_swap_study(RECIPE, out, seeds=[0], ft_lr=0.0, overrides=overrides)
