"""Study 2's runs: train and test one network per (model, pool, seed) on one recipe, and summarise.

``run_study`` is what ``tools/study_pooling.py`` runs. Each run is the recipe (a config file) with the
overrides in ``SETTINGS`` for its model, then ``model.name``, ``model.pool`` and ``seed``. The seed sets
the initial weights, the data order and the clips, and pools have no weights, so runs with one seed
differ only in their pools. Runs go to ``<out>/<model>_<pool>_s<seed>/``. A run whose test report exists
is not trained again, so an interrupted study continues where it stopped (a half-trained run resumes from
its last.pt); a run folder made with other settings is an error, never mixed in.

The summary gives each (model, pool) its mean ± std over seeds, and each seed's paired difference
soft − max and soft − avg with a paired t-test (``scipy.stats.ttest_rel``).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from scipy import stats

from .config import load_config
from .inference import run_test
from .plots import agg_figure
from .train import train

# What each model changes in the recipe (the main job's config), and why.
SETTINGS = {
    "r3d_10": [],                     # the main job itself: its clips, schedule and test views
}
# Validation does not change training (each step reseeds from (seed, rank, epoch, batch)); the study skips it.
COMMON = ["resume=auto", "train.val_every=0", "train.progress=false"]
# The paired comparisons the summary makes: (pool, baseline).
COMPARISONS = [("soft", "max"), ("soft", "avg")]


def study_config(config_path: str, out: Path, name: str, overrides: Sequence[str]) -> DictConfig:
    """The recipe with ``COMMON``, then ``overrides``, for a run in ``<out>/<name>/`` (its test report in
    ``<out>/<name>/test/``)."""
    return load_config(config_path, [*COMMON, *overrides, f"name={name}", f"output_dir={out}",
                                     f"test.output_dir={out / name / 'test'}"])


def drop_checkpoints(folder: Path) -> None:
    """Delete a run's last.pt and best.pt (an r3d_10 checkpoint with its AdamW state is 173 MB)."""
    for checkpoint in ("last.pt", "best.pt"):
        (folder / checkpoint).unlink(missing_ok=True)


def needed(checkpoint: Path) -> Path:
    """``checkpoint``, which a run still to be trained or measured starts from: a ValueError when it is gone."""
    if not checkpoint.is_file():
        raise ValueError(f"{checkpoint} is needed but gone; remove {checkpoint.parent} so that it is trained "
                         f"again, or choose another --out")
    return checkpoint


def settings_differ(saved: DictConfig, config: DictConfig, shown: int = 3) -> str:
    """The first ``shown`` settings where ``saved`` and ``config`` (both read from YAML) differ, as
    "key: saved there, config here"."""
    there, here = dict(_flatten(OmegaConf.to_container(saved))), dict(_flatten(OmegaConf.to_container(config)))
    keys = [key for key in sorted(there.keys() | here.keys()) if there.get(key, "unset") != here.get(key, "unset")]
    listed = "; ".join(f"{key}: {there.get(key, 'unset')} there, {here.get(key, 'unset')} here" for key in keys[:shown])
    if not keys:
        return "the same values, written otherwise"
    return listed + (f"; and {len(keys) - shown} more" if len(keys) > shown else "")


def _flatten(value, prefix: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}{key}.")
    else:
        yield prefix[:-1], value


def check_folder_config(folder: Path, config: DictConfig, verb: str = "trained") -> None:
    """A run folder whose config.yaml is not ``config``'s is a ValueError naming the settings that differ
    (a folder made with other settings is never mixed in)."""
    path, made = folder / "config.yaml", OmegaConf.to_yaml(config)
    if path.is_file() and path.read_text() != made:
        differ = settings_differ(OmegaConf.load(path), OmegaConf.create(made))
        raise ValueError(f"{folder} was {verb} with other settings than these ({differ}); remove it or choose "
                         f"another --out")


def train_and_test(config: DictConfig, keep_checkpoints: bool = False) -> dict:
    """Train ``config``'s run and test its last.pt, unless its test report exists; returns what it measured.

    A run folder whose config.yaml differs from ``config`` is a ``ValueError`` (never mixed in); a
    half-trained run resumes from its last.pt (``resume=auto``). Checkpoints are deleted once the run is
    tested unless ``keep_checkpoints``.

    Returns ``{"video_top1", "mean_class_acc", "epochs", "steps", "seconds_per_epoch", "train_seconds"}``.
    """
    folder = Path(config.output_dir) / config.name
    report = Path(config.test.output_dir) / "metrics.json"
    check_folder_config(folder, config)
    if not report.is_file():
        started = time.perf_counter()
        train(config)
        train_seconds = time.perf_counter() - started
        run_test(config, folder / "last.pt")
        (folder / "study_time.json").write_text(json.dumps({"train_seconds": train_seconds}))
        if not keep_checkpoints:
            drop_checkpoints(folder)
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    result = json.loads(report.read_text())
    return {"video_top1": result["video_top1"], "mean_class_acc": result["mean_class_acc"],
            "epochs": len(history), "steps": history[-1]["step"],
            "seconds_per_epoch": statistics.fmean(h["epoch_seconds"] for h in history),
            "train_seconds": json.loads((folder / "study_time.json").read_text())["train_seconds"]}


def run_one(config_path: str, out: Path, model: str, pool: str, seed: int, extra: list[str],
            keep_checkpoints: bool = False) -> dict:
    """Train and test one (model, pool, seed) in ``<out>/<model>_<pool>_s<seed>/``; returns its record.
    Checkpoints are deleted once the run is tested unless ``keep_checkpoints``."""
    overrides = [*SETTINGS.get(model, []), *extra, f"model.name={model}", f"model.pool={pool}", f"seed={seed}"]
    config = study_config(config_path, out, run_name(model, pool, seed), overrides)
    return {"model": model, "pool": pool, "seed": seed, "overrides": [*COMMON, *overrides],
            **train_and_test(config, keep_checkpoints)}


def run_name(model: str, pool: str, seed: int) -> str:
    """The folder of one Study 2 run under the study's ``--out``."""
    return f"{model}_{pool}_s{seed}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict], arm: str = "pool") -> list[dict]:
    """One row per (model, arm): video top-1 mean and std over seeds, seconds per epoch.

    ``arm`` is the record key the runs of one model differ in ("pool" in Study 2).
    """
    rows = []
    for model in dict.fromkeys(r["model"] for r in runs):
        for pool in dict.fromkeys(r[arm] for r in runs if r["model"] == model):
            group = [r for r in runs if r["model"] == model and r[arm] == pool]
            top1 = [100 * r["video_top1"] for r in group]
            mean, std = mean_std(top1)
            rows.append({"model": model, arm: pool, "seeds": [r["seed"] for r in group],
                         "top1_each": top1, "top1_mean": mean, "top1_std": std,
                         "seconds_per_epoch": statistics.fmean(r["seconds_per_epoch"] for r in group),
                         "steps": group[0]["steps"]})
    return rows


def paired_difference(runs: list[dict], model: str, value: str, baseline: str, arm: str = "pool") -> Optional[dict]:
    """``value`` minus ``baseline`` (values of the record key ``arm``) in video top-1 (points), seed by seed,
    and a two-sided paired t-test.

    Only seeds that have both runs count. Returns None when there is none; else ``{"model", arm: value,
    "baseline", "seeds", "diffs", ...}`` (the compared value under the arm's own key, e.g. "pool" or "start").
    """
    top1 = {(r[arm], r["seed"]): 100 * r["video_top1"] for r in runs if r["model"] == model}
    seeds = sorted(seed for (p, seed) in top1 if p == value and (baseline, seed) in top1)
    if not seeds:
        return None
    a = [top1[value, seed] for seed in seeds]
    b = [top1[baseline, seed] for seed in seeds]
    diffs = [x - y for x, y in zip(a, b)]
    mean, std = mean_std(diffs)
    p_value = None
    if len(seeds) < 2:
        reading = "one seed: no test"
    elif max(diffs) == min(diffs):
        reading = "the same difference on every seed: no test"
    else:
        p_value = float(stats.ttest_rel(a, b).pvalue)
        if p_value >= 0.05:
            reading = f"no difference detectable with {len(seeds)} seeds"
        else:
            reading = f"{value} {'above' if mean > 0 else 'below'} {baseline} (p < 0.05, {len(seeds)} seeds)"
    return {"model": model, arm: value, "baseline": baseline, "seeds": seeds, "diffs": diffs,
            "mean_diff": mean, "std_diff": std,
            "p_value": p_value, "reading": reading}


def paired_differences(runs: list[dict]) -> list[dict]:
    """``paired_difference`` for every model and every comparison in ``COMPARISONS`` the runs allow."""
    found = []
    for model in dict.fromkeys(r["model"] for r in runs):
        for pool, baseline in COMPARISONS:
            difference = paired_difference(runs, model, pool, baseline)
            if difference is not None:
                found.append(difference)
    return found


def table(rows: list[dict], differences: Sequence[dict] = (), arm: str = "pool") -> str:
    """Markdown: one line per (model, arm), then one per paired comparison."""
    lines = [f"| model | {arm} | video top-1 (%), mean ± std | per seed | s / epoch | steps |",
             "|---|---|---:|---|---:|---:|"]
    for row in rows:
        each = ", ".join(f"{v:.1f}" for v in row["top1_each"])
        lines.append(f"| {row['model']} | {row[arm]} | {row['top1_mean']:.1f} ± {row['top1_std']:.1f} | {each} | "
                     f"{row['seconds_per_epoch']:.1f} | {row['steps']} |")
    if differences:
        lines += ["", "| model | paired difference | per seed (points) | mean ± std | paired t-test p | reading |",
                  "|---|---|---|---:|---:|---|"]
        lines += [f"| {d['model']} | {d[arm]} − {d['baseline']} | {paired_cells(d)} |" for d in differences]
    return "\n".join(lines)


def paired_cells(d: dict) -> str:
    """A paired difference's table cells: per seed | mean ± std | p | reading."""
    each = ", ".join(f"s{seed}: {v:+.1f}" for seed, v in zip(d["seeds"], d["diffs"]))
    p = "n/a" if d["p_value"] is None else f"{d['p_value']:.2g}"
    return f"{each} | {d['mean_diff']:+.1f} ± {d['std_diff']:.1f} | {p} | {d['reading']}"


def paired_panel(ax, differences: Sequence[dict], xs: Sequence[float]) -> None:
    """Each paired difference at its x: the seeds' differences (dots), mean ± std (red), and the zero line."""
    for x, d in zip(xs, differences):
        ax.scatter([x] * len(d["diffs"]), d["diffs"], s=14, color="black", zorder=3)
        ax.errorbar([x], [d["mean_diff"]], yerr=[d["std_diff"]], fmt="_", markersize=18, capsize=4, color="C3")
    ax.axhline(0, color="grey", linewidth=0.8)


def bar_chart(rows: list[dict], differences: Sequence[dict], path: Path, arm: str = "pool") -> None:
    """Left: video top-1 per model and arm (bars: mean ± std; dots: seeds). Right: the paired differences."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    pools = list(dict.fromkeys(r[arm] for r in rows))
    width = 0.8 / len(pools)
    fig = agg_figure(figsize=(4.0 + 1.8 * len(models) + 0.9 * max(len(differences), 1), 3.8))
    ax, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2 + len(models), 0.6 + max(len(differences), 1)]})
    for i, pool in enumerate(pools):
        picked = [next((r for r in rows if r["model"] == m and r[arm] == pool), None) for m in models]
        xs = [j + (i - (len(pools) - 1) / 2) * width for j in range(len(models))]
        ax.bar(xs, [r["top1_mean"] if r else 0 for r in picked], width,
               yerr=[r["top1_std"] if r else 0 for r in picked], capsize=3, label=pool)
        for j, r in enumerate(picked):
            if r:
                ax.scatter([xs[j]] * len(r["top1_each"]), r["top1_each"], s=8, color="black", zorder=3)
    ax.set_xticks(range(len(models)), models)
    ax.set(ylabel="video top-1 (%)", ylim=(0, 100), title="mean ± std over seeds (dots: seeds)")
    ax.legend(title=arm, fontsize=8, loc="lower right")
    paired_panel(right, differences, range(len(differences)))
    right.set_xticks(range(len(differences)),
                     [f"{d['model']}\n{d[arm]} − {d['baseline']}" for d in differences], fontsize=8)
    right.set_xlim(-0.6, max(len(differences), 1) - 0.4)
    right.set(ylabel="points of video top-1", title="paired by seed")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_study(config_path: str, out: Path, models: Sequence[str], pools: Sequence[str], seeds: Sequence[int],
              overrides: Sequence[str] = (), keep_checkpoints: bool = False) -> dict:
    """Every (model, seed, pool) run, then the summary files in ``out``.

    Args:
        config_path: the recipe every run starts from (the main job's config).
        out: the study folder; finished runs in it are reused.
        models, pools, seeds: the grid; seeds are the middle loop, so a cut-short study still compares pools.
        overrides: ``key=value`` for every run, after ``SETTINGS``.
        keep_checkpoints: keep last.pt/best.pt of tested runs.

    Returns ``{"runs": [...], "summary": [...], "paired": [...], "seconds_this_call": s}``, as written to
    study_pooling.json;
    also writes study_pooling.md and study_pooling.png.
    """
    started = time.perf_counter()
    runs = []
    for model in models:
        for seed in seeds:
            for pool in pools:
                record = run_one(config_path, out, model, pool, seed, list(overrides), keep_checkpoints)
                runs.append(record)
                print(f"{model} {pool} seed {seed}: video top-1 {100 * record['video_top1']:.1f}% "
                      f"({record['seconds_per_epoch']:.1f} s/epoch, {time.perf_counter() - started:.0f} s so far)",
                      flush=True)
    rows = summarise(runs)
    differences = paired_differences(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study_pooling.md").write_text(table(rows, differences) + "\n")
    report = {"runs": runs, "summary": rows, "paired": differences,
              "seconds_this_call": time.perf_counter() - started}
    (out / "study_pooling.json").write_text(json.dumps(report, indent=1))
    bar_chart(rows, differences, out / "study_pooling.png")
    return report
