"""Study 2: does SoftPool improve accuracy? r3d_18 and c3d with soft, max and avg pooling, 3 seeds each,
trained and tested on SynthMotion with the main job's config (configs/synthmotion.yaml).

    python tools/study_pooling.py                                 # the full study (52 min on 2 cores)
    python tools/study_pooling.py --models r3d_18 --seeds 0 --out runs/study_quick train.epochs=1

Each run is the main job's recipe with the overrides in ``SETTINGS`` (a shorter schedule and, for C3D,
smaller clips, so that 18 trainings fit in an hour of CPU), then ``model.name``, ``model.pool`` and
``seed``, which sets the initial weights, the data order and the clips. Runs go to
``<out>/<model>_<pool>_s<seed>/``. A run whose test report exists is not trained again, so an
interrupted study continues where it stopped (a half-trained run resumes from its last.pt); a run
folder made with other settings is an error, never mixed in. Each run is tested with one centre view
per video (video top-1 on SynthMotion's 240 test videos).

Writes <out>/study_pooling.json, study_pooling.md (markdown table) and study_pooling.png (bar chart).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.engine import load_config, run_test, train  # noqa: E402

# What each model changes in the main job's config, and why.
SETTINGS = {
    # The main job's 8x64x64 clips; 4 epochs (280 steps of 8 clips) instead of 12.
    "r3d_18": ["train.epochs=4"],
    # C3D (78M parameters) on 8x32x32 clips still takes 1.7x ResNet-18's time per step on 8x64x64, so
    # 4x32x32 clips (every 4th frame: the same 16-frame span) and 2 epochs, to fit the hour.
    "c3d": ["train.epochs=2", "data.short_side=32", "data.crop_size=32", "data.clip_len=4", "data.frame_interval=4"],
}
COMMON = ["resume=auto", "train.val_every=0", "train.progress=false", "test.views=1x1", "data.num_workers=1"]


def run_one(config_path: str, out: Path, model: str, pool: str, seed: int, extra: list[str],
            keep_checkpoints: bool = False) -> dict:
    """Train and test one (model, pool, seed); returns its record. Checkpoints are deleted once the run
    is tested (a C3D checkpoint with its AdamW state is about 1 GB) unless ``keep_checkpoints``."""
    name = f"{model}_{pool}_s{seed}"
    overrides = [*COMMON, *SETTINGS.get(model, []), *extra, f"model.name={model}", f"model.pool={pool}",
                 f"seed={seed}", f"name={name}", f"output_dir={out}", f"test.output_dir={out / name / 'test'}"]
    config = load_config(config_path, overrides)
    folder = out / name
    report = folder / "test" / "metrics.json"
    if (folder / "config.yaml").is_file() and (folder / "config.yaml").read_text() != OmegaConf.to_yaml(config):
        raise SystemExit(f"error: {folder} was trained with other settings than these; remove it or choose "
                         f"another --out")
    if not report.is_file():
        started = time.perf_counter()
        train(config)
        train_seconds = time.perf_counter() - started
        run_test(config, folder / "last.pt")
        (folder / "study_time.json").write_text(json.dumps({"train_seconds": train_seconds}))
        if not keep_checkpoints:
            for checkpoint in ("last.pt", "best.pt"):
                (folder / checkpoint).unlink(missing_ok=True)
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    result = json.loads(report.read_text())
    return {"model": model, "pool": pool, "seed": seed, "overrides": overrides,
            "video_top1": result["video_top1"], "mean_class_acc": result["mean_class_acc"],
            "epochs": len(history), "steps": history[-1]["step"],
            "seconds_per_epoch": statistics.fmean(h["epoch_seconds"] for h in history),
            "train_seconds": json.loads((folder / "study_time.json").read_text())["train_seconds"]}


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (model, pool): video top-1 mean and std over seeds, seconds per epoch."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in runs):
        for pool in dict.fromkeys(r["pool"] for r in runs if r["model"] == model):
            group = [r for r in runs if r["model"] == model and r["pool"] == pool]
            top1 = [100 * r["video_top1"] for r in group]
            rows.append({"model": model, "pool": pool, "seeds": [r["seed"] for r in group],
                         "top1_each": top1, "top1_mean": statistics.fmean(top1),
                         "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
                         "seconds_per_epoch": statistics.fmean(r["seconds_per_epoch"] for r in group),
                         "steps": group[0]["steps"]})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | pool | video top-1 (%), mean ± std | per seed | s / epoch | steps |",
             "|---|---|---:|---|---:|---:|"]
    for row in rows:
        each = ", ".join(f"{v:.1f}" for v in row["top1_each"])
        lines.append(f"| {row['model']} | {row['pool']} | {row['top1_mean']:.1f} ± {row['top1_std']:.1f} | {each} | "
                     f"{row['seconds_per_epoch']:.1f} | {row['steps']} |")
    return "\n".join(lines)


def bar_chart(rows: list[dict], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    models = list(dict.fromkeys(r["model"] for r in rows))
    pools = list(dict.fromkeys(r["pool"] for r in rows))
    width = 0.8 / len(pools)
    fig, ax = plt.subplots(figsize=(2.2 + 1.8 * len(models), 3.6))
    for i, pool in enumerate(pools):
        picked = [next((r for r in rows if r["model"] == m and r["pool"] == pool), None) for m in models]
        xs = [j + (i - (len(pools) - 1) / 2) * width for j in range(len(models))]
        ax.bar(xs, [r["top1_mean"] if r else 0 for r in picked], width,
               yerr=[r["top1_std"] if r else 0 for r in picked], capsize=3, label=pool)
        for j, r in enumerate(picked):
            if r:
                ax.scatter([xs[j]] * len(r["top1_each"]), r["top1_each"], s=8, color="black", zorder=3)
    ax.set_xticks(range(len(models)), models)
    ax.set(ylabel="video top-1 (%)", ylim=(0, 100), title="SynthMotion, mean ± std over seeds (dots: seeds)")
    ax.legend(title="pool", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/synthmotion.yaml", help="the main job's config")
    parser.add_argument("--models", nargs="+", default=["r3d_18", "c3d"])
    parser.add_argument("--pools", nargs="+", default=["soft", "max", "avg"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/study_pooling"))
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's last.pt and best.pt (deleted once the run is tested)")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every run, after SETTINGS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")

    started = time.perf_counter()
    runs = []
    for model in args.models:
        for seed in args.seeds:          # seeds outermost within a model: a cut-short study still compares pools
            for pool in args.pools:
                record = run_one(args.config, args.out, model, pool, seed, args.overrides, args.keep_checkpoints)
                runs.append(record)
                print(f"{model} {pool} seed {seed}: video top-1 {100 * record['video_top1']:.1f}% "
                      f"({record['seconds_per_epoch']:.1f} s/epoch, {time.perf_counter() - started:.0f} s so far)",
                      flush=True)
    rows = summarise(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(rows)
    (args.out / "study_pooling.md").write_text(text + "\n")
    (args.out / "study_pooling.json").write_text(json.dumps({"runs": runs, "summary": rows,
                                                             "seconds_this_call": time.perf_counter() - started},
                                                            indent=1))
    bar_chart(rows, args.out / "study_pooling.png")
    print(text)
    print(f"\n{len(runs)} runs ({time.perf_counter() - started:.0f} s in this call; finished runs are reused); "
          f"wrote {args.out}/study_pooling.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
