"""Study 3 (softpool3d study-swap) end to end on a tiny SynthMotion: the real training, test and hardness code."""

import json
from pathlib import Path

import pytest
import torch

from softpool3d.engine import load_checkpoint
from softpool3d.engine.inference import model_from_checkpoint
from softpool3d.engine import swap
from softpool3d.engine.swap import HARDNESS_FORMAT, _hardness_file, hardness, run_swap_study, window_hardness
from softpool3d.nn import SoftPool3d

from helpers import RECIPE, SHRINK


def test_window_hardness_lies_between_uniform_and_max():
    pool = SoftPool3d(3, 2, 1)
    x = torch.randn(2, 3, 5, 6, 6)
    top, window, uniform = window_hardness(x, pool)
    assert window == 27 and top.shape == (2, 3, 3, 3, 3) and uniform.shape == (3, 3, 3)
    assert (top >= uniform.float() - 1e-6).all() and top.max() <= 1 + 1e-6
    assert torch.allclose(window_hardness(torch.zeros(1, 1, 4, 4, 4), SoftPool3d(2))[0], torch.tensor(1 / 8))
    # The corner window holds 2x2x2 real elements (padding excluded): equal inputs give 1/8, not 1/27.
    assert torch.isclose(window_hardness(torch.zeros(1, 1, 3, 3, 3), pool)[0][0, 0, 0, 0, 0], torch.tensor(1 / 8))
    assert uniform[0, 0, 0] == 1 / 8 and uniform[1, 1, 1] == 1 / 27 and uniform[0, 1, 1] == 1 / 18   # T: 2 of 3 real, H and W: 3
    peaks = torch.zeros(1, 1, 4, 4, 4)
    peaks[..., ::2, ::2, ::2] = 100                        # one large value per 2x2x2 window: max pooling
    assert torch.allclose(window_hardness(peaks, SoftPool3d(2))[0], torch.ones(1, 1, 2, 2, 2))


def test_hardness_of_equal_inputs_is_the_average_pooling_reference():
    # Border windows hold fewer real elements: equal inputs give a mean largest weight above 1/27, and the
    # recorded reference is that mean, not 1/K.
    model = torch.nn.Sequential(SoftPool3d(3, 2, 1))
    site = hardness(model, [{"video": torch.zeros(2, 3, 5, 6, 6)}])["0"]
    assert site["window"] == 27 and site["hardness"] > 1 / 27 + 0.01
    assert site["uniform"] == pytest.approx(site["hardness"], rel=1e-6)
    assert site["windows"] == 2 * 3 * 3 * 3 * 3


def test_hardness_file_is_measured_again_for_another_format_or_clip_count(tmp_path):
    path, calls = tmp_path / "hardness.json", []
    sites = {"pool": {"hardness": 0.5, "window": 27, "uniform": 0.06, "max": 1.0, "windows": 100}}
    measure = lambda: calls.append(1) or sites                                      # noqa: E731
    path.write_text(json.dumps({"pool": {**sites["pool"], "uniform": 1 / 27}}))   # format 1: no clips, 1/K
    assert _hardness_file(path, 5, measure) == sites and len(calls) == 1
    assert json.loads(path.read_text()) == {"format": HARDNESS_FORMAT, "clips": 5, "sites": sites}
    assert _hardness_file(path, 5, measure) == sites and len(calls) == 1           # reused
    assert _hardness_file(path, 6, measure) == sites and len(calls) == 2           # other --clips
    # Format 1 whose checkpoint is gone: its hardness stays, "uniform" comes from a network of the same
    # geometry measured on as many clips (its window count tells).
    path.write_text(json.dumps({"pool": {**sites["pool"], "hardness": 0.7, "uniform": 1 / 27}}))
    upgraded = _hardness_file(path, 5, measure, checkpoint=tmp_path / "gone.pt", geometry=sites)
    assert upgraded == {"pool": {**sites["pool"], "hardness": 0.7}} and len(calls) == 2
    path.write_text(json.dumps({"pool": {**sites["pool"], "windows": 50}}))        # other clip count: an error
    with pytest.raises(ValueError, match="measured in an older format, and .*gone.pt, needed to measure it on 5"):
        _hardness_file(path, 5, measure, checkpoint=tmp_path / "gone.pt", geometry=sites)
    assert _hardness_file(path, 5, measure, checkpoint=path, geometry=sites) == sites and len(calls) == 3


def test_swap_study_default_ft_lr_follows_the_models_settings(tmp_path, monkeypatch):
    monkeypatch.setitem(swap.SETTINGS, "r3d_10", ["optim.lr=0.05"])

    def stop(*args):
        raise RuntimeError(f"ft_lr={args[6]}")
    monkeypatch.setattr(swap, "swap_seed", stop)
    with pytest.raises(RuntimeError, match="ft_lr=0.005"):
        run_swap_study(RECIPE, tmp_path, seeds=[0], overrides=SHRINK)
    for seeds, epochs in (([0, 0], [1]), ([0], [1, 3, 1])):
        with pytest.raises(ValueError, match="repeats a value"):
            run_swap_study(RECIPE, tmp_path, seeds=seeds, ft_epochs=epochs, overrides=SHRINK)


def test_swap_study_swaps_only_pools_measures_hardness_and_resumes(synth6, tmp_path):
    out = tmp_path / "swap"
    overrides = [f"data.root={synth6}", *SHRINK, "data.keep_classes=[MoveLeft,MoveRight,MoveUp,MoveDown]"]
    # A learning rate of 1e-12: the fine-tuned weights are the ones they started from.
    report = run_swap_study(RECIPE, out, seeds=[0], ft_epochs=[1], ft_lr=1e-12, clips=5, overrides=overrides,
                            keep_checkpoints=True)
    arms = {(r["ft_epochs"], r["pool"]) for r in report["runs"]}
    assert arms == {(0, "max"), (0, "soft"), (1, "max"), (1, "soft")}
    # The swapped network: the max run's weights unchanged, only the pool module differs.
    max_model, _, _ = model_from_checkpoint(out / "r3d_10_max_s0" / "last.pt")
    soft_model, config, _ = model_from_checkpoint(out / "r3d_10_max_s0_swapped" / "swapped.pt")
    assert config.model.pool == "soft"
    a, b = max_model.state_dict(), soft_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    changed = [n for (n, m), (_, s) in zip(max_model.named_modules(), soft_model.named_modules())
               if type(m) is not type(s)]
    assert changed == ["pool"] and isinstance(soft_model.pool, SoftPool3d)
    # Fine-tunes start from the max checkpoint's weights (every one), with --ft-lr and no warmup.
    start = load_checkpoint(out / "r3d_10_max_s0" / "last.pt")["model"]
    for pool in ("soft", "max"):
        ft = load_checkpoint(out / f"r3d_10_max_s0_ft1_{pool}" / "last.pt")
        assert ft["config"]["model"]["pretrained"] == str((out / "r3d_10_max_s0" / "last.pt").resolve())
        assert ft["config"]["optim"]["lr"] == 1e-12 and ft["config"]["optim"]["warmup_epochs"] == 0
        weights = [k for k, v in start.items() if v.is_floating_point() and "running" not in k]
        assert all(torch.allclose(ft["model"][k], start[k], atol=1e-6) for k in weights), pool
    # Hardness per site, swapped (0) and after the soft fine-tune (1): above the average-pooling reference
    # (itself above 1/window: border windows are smaller), at most 1.
    sites = report["hardness"]
    assert [(s["site"], s["ft_epochs"]) for s in sites] == [("pool", 0), ("pool", 1)]
    assert all(s["window"] == 27 and 1 / 27 < s["uniform"] <= s["mean"] <= 1 for s in sites)
    assert report["paired"][0]["ft_epochs"] == 0 and len(report["paired"]) == 2
    table = (out / "study_swap.md").read_text()
    assert "soft (swapped, no training)" in table and "| pool | 27 | swapped, no training |" in table
    assert (out / "study_swap.png").stat().st_size > 1000
    assert json.loads((out / "study_swap.json").read_text())["hardness"] == sites
    # A rerun trains, tests and measures nothing: every step's result is reused.
    tested = sorted(out.rglob("metrics.json"))
    measured = sorted(out.rglob("hardness.json"))
    assert len(tested) == 4 and len(measured) == 2
    stamps = lambda files: {p: p.stat().st_mtime_ns for p in files}                 # noqa: E731
    before_tests, before_hardness = stamps(tested), stamps(measured)
    again = run_swap_study(RECIPE, out, seeds=[0], ft_epochs=[1], ft_lr=1e-12, clips=5, overrides=overrides,
                           keep_checkpoints=True)
    assert again["runs"] == report["runs"] and again["hardness"] == sites
    assert stamps(tested) == before_tests and stamps(measured) == before_hardness
    # Another --clips measures the hardness again, nothing else.
    other = run_swap_study(RECIPE, out, seeds=[0], ft_epochs=[1], ft_lr=1e-12, clips=4, overrides=overrides)
    assert other["runs"] == report["runs"] and stamps(tested) == before_tests
    assert not (out / "r3d_10_max_s0_ft1_soft" / "last.pt").exists()    # dropped without --keep-checkpoints
    assert (out / "r3d_10_max_s0" / "last.pt").exists()                 # the fine-tunes' start is kept
    assert json.loads((out / "r3d_10_max_s0_swapped" / "hardness.json").read_text())["clips"] == 4
    assert other["hardness_runs"][0]["windows"] == report["hardness_runs"][0]["windows"] * 4 // 5
    hardness_at_4 = stamps(out.rglob("hardness.json"))
    # A fine-tune measured on other clips whose checkpoint is gone cannot be measured again: a clear error.
    with pytest.raises(ValueError, match="measured on 4 clips, and .*ft1_soft/last.pt, needed to measure it on 5"):
        run_swap_study(RECIPE, out, seeds=[0], ft_epochs=[1], ft_lr=1e-12, clips=5, overrides=overrides)
    assert stamps(out.rglob("hardness.json")) == hardness_at_4      # said before anything was measured again
    # A format-1 hardness.json (the study's first files) is measured again; the fine-tune's, whose checkpoint
    # is gone, keeps its hardness and takes the swapped network's average-pooling reference.
    ft_file = out / "r3d_10_max_s0_ft1_soft" / "hardness.json"
    ft_sites = json.loads(ft_file.read_text())["sites"]
    ft_file.write_text(json.dumps({s: {**v, "uniform": 1 / 27} for s, v in ft_sites.items()}))
    upgraded = run_swap_study(RECIPE, out, seeds=[0], ft_epochs=[1], ft_lr=1e-12, clips=4, overrides=overrides)
    assert upgraded["hardness"] == other["hardness"] and stamps(tested) == before_tests
    assert json.loads(ft_file.read_text())["format"] == HARDNESS_FORMAT
    with pytest.raises(ValueError, match="--ft-epochs must be >= 1"):
        run_swap_study(RECIPE, out, seeds=[0], ft_epochs=[0], overrides=overrides)
    with pytest.raises(ValueError, match="--ft-lr must be > 0"):
        run_swap_study(RECIPE, out, seeds=[0], ft_lr=0.0, overrides=overrides)
    # The swapped folder is checked like a trained one: made with other settings, it is an error.
    config_file = out / "r3d_10_max_s0_swapped" / "config.yaml"
    config_file.write_text(config_file.read_text().replace("pool: soft", "pool: avg"))
    with pytest.raises(ValueError, match="r3d_10_max_s0_swapped was made with other settings"):
        run_swap_study(RECIPE, out, seeds=[0], ft_epochs=[1], ft_lr=1e-12, clips=4, overrides=overrides)
