"""Study 3: SoftPool put into a network trained with max pooling (SoftPool issues #28 and #33).

``run_swap_study`` is what ``softpool3d study-swap`` runs. Per seed:

1. the main job's recipe with ``model.pool=max`` is trained and tested as Study 2 trains it, in
   ``<out>/<model>_max_s<seed>/`` (a finished run, Study 2's included, is reused; its last.pt is kept);
2. its pools are swapped to soft with no training: pools have no weights, so the checkpoint's state dict
   loads as it is into the network built with ``model.pool=soft`` (``swapped_checkpoint``), tested in
   ``<out>/<model>_max_s<seed>_swapped/``;
3. the max checkpoint is fine-tuned through the normal training code (``model.pretrained=<last.pt>``, no
   warmup, a low learning rate) for each of ``ft_epochs``, once with soft and once with max pools, same
   seed (same batches), in ``<out>/<model>_max_s<seed>_ft<E>_<pool>/``, and tested.

For every soft network (2 and the soft fine-tunes) the "hardness" of each pool site is measured: the mean
over windows of the largest SoftPool weight in the window, 1 / sum_i exp(x_i - max x), padding excluded
(``window_hardness``). It lies between the average-pooling reference (all equal: the mean over the same windows
of 1 / their real element count, which border windows make larger than 1/K) and 1 (max pooling).

The summary pairs soft - max by seed at 0 (swapped vs as trained) and at each fine-tune length, with a paired
t-test. Every step's result is a file in its folder, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..datasets import collate_clips
from ..nn import _AdaptiveSoftPoolNd, _SoftPoolNd
from ..ops._geometry import adaptive_args, adaptive_windows, pool_args, pool_windows
from ..ops.reference import _gather, _weights
from .checkpoint import load_checkpoint, save_checkpoint
from .config import load_config
from .data import build_dataset
from .inference import model_from_checkpoint, run_test
from .plots import agg_figure
from .study import (COMMON, SETTINGS, check_folder_config, drop_checkpoints, mean_std, needed, paired_cells,
                    paired_difference, paired_panel, run_name, run_one, study_config, train_and_test)

# ----------------------------------------------------------------------------- hardness of the pools


def pool_sites(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every SoftPool module of ``model`` (fixed and adaptive windows), named by module path."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, (_SoftPoolNd, _AdaptiveSoftPoolNd))]


def window_hardness(x: torch.Tensor, pool: nn.Module) -> tuple[torch.Tensor, int, torch.Tensor]:
    """The largest SoftPool weight of each window ``pool`` makes of ``x``, the windows' size, and what the weight
    would be with equal inputs (average pooling).

    Args:
        x: the pool's input, (N, C, *spatial) with ``pool.dims`` spatial axes.
        pool: a SoftPool module (``SoftPool3d``, ``AdaptiveSoftPool3d``, ...).

    Returns (weights, K, uniform): weights (N, C, *out), each 1 / sum_i exp(x_i - max x) over the window's real
    elements (padding excluded), so in [uniform, 1]; K the largest window's element count; uniform (*out),
    1 / the window's real element count (a border window has fewer than K).
    """
    dims = pool.dims
    if isinstance(pool, _SoftPoolNd):
        kernel, stride, padding = pool_args(x, dims, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, 1,
                                            type(pool).__name__)
        windows = pool_windows(x.shape[-dims:], kernel, stride, padding, pool.ceil_mode)
    else:
        windows = adaptive_windows(x.shape[-dims:], adaptive_args(x, dims, pool.output_size, type(pool).__name__))
    gathered, valid, _ = _gather(x.float(), windows)      # (N, C, *out, K); -inf where no input is
    weights, _ = _weights(gathered)
    return weights.amax(-1), gathered.shape[-1], 1 / valid.sum(-1).double()


@torch.no_grad()
def hardness(model: nn.Module, batches: Iterable[dict]) -> dict[str, dict]:
    """Run ``model`` (eval mode) on ``batches`` of clips and measure each SoftPool site on its real inputs.

    Args:
        model: a network with SoftPool modules.
        batches: ``collate_clips`` dicts whose "video" is (B, C, T, H, W) (or (B, V, C, T, H, W), views
            flattened into the batch).

    Returns {site: {"hardness": mean over windows of the largest weight, "window": K (the largest window),
    "uniform": the same mean for equal inputs (average pooling: over the same windows, 1 / each one's real
    element count), "max": 1.0, "windows": count}}, sites in module order. A model without SoftPool gives {}.
    """
    sites = pool_sites(model)
    sums = {name: [0.0, 0, 0, 0.0] for name, _ in sites}  # sum of weights, windows, K, sum of uniform weights

    def hook(name: str):
        def measure(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            top, window, uniform = window_hardness(inputs[0], module)
            sums[name][0] += float(top.double().sum())
            sums[name][1] += top.numel()
            sums[name][2] = max(sums[name][2], window)
            sums[name][3] += float(uniform.sum()) * (top.numel() // uniform.numel())   # the same for every (N, C)
        return measure

    handles = [module.register_forward_hook(hook(name)) for name, module in sites]
    try:
        model.eval()
        for batch in batches:
            video = batch["video"]
            model(video.flatten(0, 1) if video.dim() == 6 else video)
    finally:
        for handle in handles:
            handle.remove()
    return {name: {"hardness": total / max(count, 1), "window": window, "uniform": uniform / max(count, 1),
                   "max": 1.0, "windows": count} for name, (total, count, window, uniform) in sums.items()}


def evenly_spread(length: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(length)`` (all of them when ``count >= length``)."""
    if count >= length:
        return list(range(length))
    return sorted({round(i * (length - 1) / max(count - 1, 1)) for i in range(count)})


def measure_hardness(checkpoint: Path, config: DictConfig, clips: int) -> dict[str, dict]:
    """``hardness`` of ``checkpoint``'s network on one centre clip of ``clips`` test videos of ``config``'s
    held-out split, spread evenly over it (the list is sorted by class, so every class is in)."""
    model, _, _ = model_from_checkpoint(checkpoint)
    dataset = build_dataset(config, "test", on_error="raise")
    picked = Subset(dataset, evenly_spread(len(dataset), clips))
    batches = DataLoader(picked, batch_size=config.test.batch_size, collate_fn=collate_clips)
    return hardness(model, batches)


# ----------------------------------------------------------------------------- the swap


def swapped_checkpoint(checkpoint: Path, pool: str, path: Path) -> Path:
    """Write to ``path`` ``checkpoint``'s weights and classes with ``model.pool`` set to ``pool``: the same
    network with other pools (pools have no weights, so its state dict loads unchanged). Returns ``path``."""
    state = load_checkpoint(checkpoint)
    config = dict(state["config"])
    config["model"] = {**config["model"], "pool": pool}
    made = {key: state[key] for key in ("normalisation", "clip") if key in state}
    save_checkpoint({"model": state["model"], "config": config, "classes": state["classes"], **made}, path)
    return path


# hardness.json: {"format": HARDNESS_FORMAT, "clips": --clips, "sites": measure_hardness's dict}. Format 2 added
# the average-pooling reference over the real windows ("uniform"); format 1 was the sites' dict alone, with
# 1/K there. A file of another format or clip count is measured again (forward passes only).
HARDNESS_FORMAT = 2


def _stored_hardness(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def _is_current(stored: Optional[dict], clips: int) -> bool:
    """Whether a hardness.json's content is in this format and measured on ``clips`` clips."""
    return stored is not None and stored.get("format") == HARDNESS_FORMAT and stored.get("clips") == clips


def _cannot_measure(path: Path, stored: Optional[dict], clips: int, checkpoint: Path) -> ValueError:
    measured = f"on {stored['clips']} clips" if stored and "clips" in stored else "in an older format"
    return ValueError(f"{path} was measured {measured}, and {checkpoint}, needed to measure it on {clips}, is "
                      f"gone; rerun with that --clips, or remove {checkpoint.parent} so that it is trained again "
                      f"(--keep-checkpoints keeps the fine-tunes' checkpoints for another --clips)")


def _hardness_file(path: Path, clips: int, compute, checkpoint: Optional[Path] = None,
                   geometry: Optional[dict[str, dict]] = None) -> dict[str, dict]:
    """The sites of the hardness.json ``path`` when it was measured on ``clips`` clips in this format; else
    ``compute()``'s, written there first.

    ``geometry``: sites measured on the same clips by a network of the same architecture (the swapped one),
    for a format-1 file whose ``checkpoint`` is gone (a tested fine-tune's, deleted): "uniform" and "windows"
    depend only on the pools' input shapes, not on the weights, so such a file keeps its measured hardness
    and takes "uniform" from ``geometry``, if its window counts show the same clip count.
    """
    stored = _stored_hardness(path)
    if _is_current(stored, clips):
        return stored["sites"]
    old = stored if stored is not None and "format" not in stored else None
    if (checkpoint is not None and not checkpoint.is_file() and old is not None and geometry is not None
            and old.keys() == geometry.keys() and all(old[site]["windows"] == geometry[site]["windows"] for site in old)):
        sites = {site: {**old[site], "uniform": geometry[site]["uniform"]} for site in old}
        note = {"note": "format 1 upgraded: hardness as measured then, uniform from the swapped network"}
    elif checkpoint is not None and not checkpoint.is_file():
        raise _cannot_measure(path, stored, clips, checkpoint)
    else:
        sites, note = compute(), {}
    path.write_text(json.dumps({"format": HARDNESS_FORMAT, "clips": clips, "sites": sites, **note}, indent=1))
    return sites


def _check_folder_config(folder: Path, config: DictConfig) -> None:
    """A run folder not trained by ``train_and_test`` (the swapped test): its config.yaml must be ``config``'s
    (written when absent), so a folder made with other settings is an error, never mixed in."""
    check_folder_config(folder, config, verb="made")
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(config))


def _finetune_name(model: str, seed: int, epochs: int, pool: str) -> str:
    """The run folder of a fine-tune of ``model``'s max run ``seed`` for ``epochs`` epochs with ``pool``."""
    return f"{run_name(model, 'max', seed)}_ft{epochs}_{pool}"


def swap_seed(config_path: str, out: Path, model: str, seed: int, overrides: Sequence[str], ft_epochs: Sequence[int],
              ft_lr: float, clips: int, keep_checkpoints: bool) -> tuple[list[dict], list[dict]]:
    """One seed of the study: the max run, its swap and its fine-tunes.

    Returns (runs, hardness): runs ``{"model", "seed", "ft_epochs", "pool", "video_top1", ...}`` (ft_epochs 0:
    as trained with max pools, and swapped to soft); hardness ``{"seed", "ft_epochs", "site", "hardness",
    "window", "uniform", "max", "windows"}`` per soft network and site.
    """
    base = run_one(config_path, out, model, "max", seed, list(overrides), keep_checkpoints=True)
    checkpoint = out / run_name(model, "max", seed) / "last.pt"
    runs = [{"model": model, "seed": seed, "ft_epochs": 0, **base}]
    common = [*SETTINGS.get(model, []), *overrides, f"model.name={model}", f"seed={seed}"]

    swapped_name = f"{run_name(model, 'max', seed)}_swapped"
    config = study_config(config_path, out, swapped_name, [*common, "model.pool=soft"])
    folder = out / swapped_name
    folder.mkdir(parents=True, exist_ok=True)
    _check_folder_config(folder, config)
    swapped = folder / "swapped.pt"

    def swapped_now() -> Path:
        if not swapped.is_file():
            swapped_checkpoint(needed(checkpoint), "soft", swapped)
        return swapped

    if not (folder / "test" / "metrics.json").is_file():
        run_test(config, swapped_now())
    values = swapped_values = _hardness_file(folder / "hardness.json", clips,
                                             lambda: measure_hardness(swapped_now(), config, clips))
    if not keep_checkpoints:
        swapped.unlink(missing_ok=True)
    result = json.loads((folder / "test" / "metrics.json").read_text())
    runs.append({"model": model, "seed": seed, "ft_epochs": 0, "pool": "soft", "video_top1": result["video_top1"],
                 "mean_class_acc": result["mean_class_acc"]})
    found = [{"seed": seed, "ft_epochs": 0, "site": site, **v} for site, v in values.items()]

    for epochs in ft_epochs:
        for pool in ("soft", "max"):
            name = _finetune_name(model, seed, epochs, pool)
            config = study_config(config_path, out, name, [
                *common, f"model.pool={pool}", f"model.pretrained={checkpoint.resolve()}", f"train.epochs={epochs}",
                f"optim.lr={ft_lr}", "optim.warmup_epochs=0"])
            if not (out / name / "test" / "metrics.json").is_file():
                needed(checkpoint)
            record = train_and_test(config, keep_checkpoints=True)
            runs.append({"model": model, "seed": seed, "ft_epochs": epochs, "pool": pool, **record})
            if pool == "soft":
                values = _hardness_file(out / name / "hardness.json", clips,
                                        lambda: measure_hardness(needed(out / name / "last.pt"), config, clips),
                                        checkpoint=out / name / "last.pt", geometry=swapped_values)
                found += [{"seed": seed, "ft_epochs": epochs, "site": site, **v} for site, v in values.items()]
            if not keep_checkpoints:
                drop_checkpoints(out / name)
    return runs, found


# ----------------------------------------------------------------------------- the summary


def summarise_swap(runs: list[dict], found: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(accuracy rows per (ft_epochs, pool), paired soft − max per ft_epochs, hardness rows per (site, ft_epochs)).

    Accuracies are in points (video top-1 x 100), hardness as measured.
    """
    rows, paired, sites = [], [], []
    for epochs in sorted(dict.fromkeys(r["ft_epochs"] for r in runs)):
        group = [r for r in runs if r["ft_epochs"] == epochs]
        for pool in ("max", "soft"):
            top1 = [100 * r["video_top1"] for r in group if r["pool"] == pool]
            if top1:
                mean, std = mean_std(top1)
                rows.append({"ft_epochs": epochs, "pool": pool, "seeds": [r["seed"] for r in group if r["pool"] == pool],
                             "top1_each": top1, "top1_mean": mean, "top1_std": std})
        difference = paired_difference(group, group[0]["model"], "soft", "max")
        if difference is not None:
            paired.append({"ft_epochs": epochs, **difference})
    for site in dict.fromkeys(h["site"] for h in found):
        for epochs in sorted(dict.fromkeys(h["ft_epochs"] for h in found if h["site"] == site)):
            group = [h for h in found if h["site"] == site and h["ft_epochs"] == epochs]
            values = [h["hardness"] for h in group]
            mean, std = mean_std(values)
            sites.append({"site": site, "ft_epochs": epochs, "seeds": [h["seed"] for h in group], "each": values,
                          "mean": mean, "std": std, "window": group[0]["window"],
                          "uniform": statistics.fmean(h["uniform"] for h in group), "max": 1.0})
    return rows, paired, sites


def _after(epochs: int) -> str:
    return "swapped, no training" if epochs == 0 else f"{epochs} fine-tune epoch{'s' if epochs > 1 else ''}"


def swap_table(rows: list[dict], paired: list[dict], sites: list[dict]) -> str:
    """Markdown: accuracy per (fine-tune epochs, pool), the paired differences, the hardness per site."""
    lines = ["| fine-tune epochs | pool | video top-1 (%), mean ± std | per seed |", "|---:|---|---:|---|"]
    for row in rows:
        each = ", ".join(f"{v:.1f}" for v in row["top1_each"])
        what = "max (as trained)" if row["ft_epochs"] == 0 and row["pool"] == "max" else row["pool"]
        what = "soft (swapped, no training)" if row["ft_epochs"] == 0 and row["pool"] == "soft" else what
        lines.append(f"| {row['ft_epochs']} | {what} | {row['top1_mean']:.1f} ± {row['top1_std']:.1f} | {each} |")
    lines += ["", "| fine-tune epochs | soft − max per seed (points) | mean ± std | paired t-test p | reading |",
              "|---:|---|---:|---:|---|"]
    lines += [f"| {d['ft_epochs']} | {paired_cells(d)} |" for d in paired]
    lines += ["", "| pool site | window | soft network | hardness, mean ± std | per seed | average pooling | max |",
              "|---|---:|---|---:|---|---:|---:|"]
    for s in sites:
        each = ", ".join(f"{v:.3f}" for v in s["each"])
        lines.append(f"| {s['site']} | {s['window']} | {_after(s['ft_epochs'])} | {s['mean']:.3f} ± {s['std']:.3f} | "
                     f"{each} | {s['uniform']:.3f} | 1 |")
    return "\n".join(lines)


def swap_plot(rows: list[dict], paired: list[dict], sites: list[dict], path: Path) -> None:
    """Three panels against fine-tune epochs: video top-1 per pool (mean ± std, dots: seeds), the paired
    soft − max differences, and each site's hardness between its average-pooling and max-pooling references."""
    fig = agg_figure(figsize=(12.5, 3.8))
    accuracy, difference, hard = fig.subplots(1, 3)
    for pool, colour in (("max", "C1"), ("soft", "C0")):
        picked = [r for r in rows if r["pool"] == pool]
        xs = [r["ft_epochs"] for r in picked]
        accuracy.errorbar(xs, [r["top1_mean"] for r in picked], yerr=[r["top1_std"] for r in picked], capsize=3,
                          marker="o", color=colour, label=pool)
        for r in picked:
            accuracy.scatter([r["ft_epochs"]] * len(r["top1_each"]), r["top1_each"], s=8, color="black", zorder=3)
    accuracy.set(xlabel="fine-tune epochs (0: as trained / swapped)", ylabel="video top-1 (%)", ylim=(0, 100),
                 title="max-trained network, pools soft or max")
    accuracy.legend(title="pool", fontsize=8, loc="lower right")
    paired_panel(difference, paired, [d["ft_epochs"] for d in paired])
    difference.set(xlabel="fine-tune epochs", ylabel="points of video top-1", title="soft − max, paired by seed")
    for k, site in enumerate(dict.fromkeys(s["site"] for s in sites)):
        picked = [s for s in sites if s["site"] == site]
        hard.errorbar([s["ft_epochs"] for s in picked], [s["mean"] for s in picked], yerr=[s["std"] for s in picked],
                      marker="o", capsize=3, color=f"C{k}", label=site)
        hard.axhline(picked[0]["uniform"], color=f"C{k}", linestyle=":", linewidth=0.8)
    hard.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    hard.set(xlabel="fine-tune epochs", ylabel="mean largest weight per window", ylim=(0, 1.05),
             title="hardness (dashed: max pool, dotted: avg pool)")
    if sites:
        hard.legend(title="site", fontsize=8, loc="lower right")
    for ax in (accuracy, difference, hard):
        ax.set_xticks(sorted(dict.fromkeys(r["ft_epochs"] for r in rows)))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_swap_study(config_path: str, out: Path, model: str = "r3d_10", seeds: Sequence[int] = (0, 1, 2),
                   ft_epochs: Sequence[int] = (1, 3), ft_lr: Optional[float] = None, clips: int = 64,
                   overrides: Sequence[str] = (), keep_checkpoints: bool = False) -> dict:
    """Every seed of Study 3 (``swap_seed``), then the summary files in ``out``.

    Args:
        config_path: the recipe (the main job's config).
        out: the study folder; finished steps in it are reused.
        model: the network; seeds: one max-trained network each.
        ft_epochs: fine-tune lengths, each a run of its own (its cosine schedule spans its epochs).
        ft_lr: the fine-tunes' learning rate; None: a tenth of ``optim.lr`` as the runs have it (the recipe
            with the model's settings and ``overrides``).
        clips: test videos (one centre clip each, spread over the split) the hardness is measured on.
        overrides: ``key=value`` for every run (the max runs and the fine-tunes).
        keep_checkpoints: keep the fine-tunes' checkpoints and the swapped one (the max runs' last.pt is
            always kept: the fine-tunes start from it).

    Returns ``{"runs", "accuracy", "paired", "hardness", "hardness_runs", "ft_lr", "seconds_this_call"}``, as
    written to study_swap.json; also writes study_swap.md and study_swap.png.
    """
    if any(e < 1 for e in ft_epochs) or clips < 1:
        raise ValueError(f"--ft-epochs must be >= 1 and --clips >= 1, got {list(ft_epochs)} and {clips}")
    for option, values in (("--seeds", seeds), ("--ft-epochs", ft_epochs)):
        if len(set(values)) != len(values):
            raise ValueError(f"{option} repeats a value: {list(values)}; name each once")
    if ft_lr is None:     # the recipe's learning rate as the runs have it (SETTINGS included)
        ft_lr = load_config(config_path, [*COMMON, *SETTINGS.get(model, []), *overrides,
                                          f"model.name={model}"]).optim.lr / 10
    if ft_lr <= 0:
        raise ValueError(f"--ft-lr must be > 0, got {ft_lr}")
    # A tested soft fine-tune measured on other clips whose checkpoint is gone cannot be measured again: say so
    # before anything is measured or written.
    for seed in seeds:
        for epochs in ft_epochs:
            folder = out / _finetune_name(model, seed, epochs, "soft")
            stored = _stored_hardness(folder / "hardness.json")
            if (stored is not None and stored.get("format") == HARDNESS_FORMAT and not _is_current(stored, clips)
                    and not (folder / "last.pt").is_file()):
                raise _cannot_measure(folder / "hardness.json", stored, clips, folder / "last.pt")
    started = time.perf_counter()
    runs, found = [], []
    for seed in seeds:
        seed_runs, seed_found = swap_seed(config_path, out, model, seed, overrides, ft_epochs, ft_lr, clips,
                                          keep_checkpoints)
        runs += seed_runs
        found += seed_found
        shown = ", ".join(f"{r['pool']}@{r['ft_epochs']} {100 * r['video_top1']:.1f}%" for r in seed_runs)
        print(f"seed {seed}: {shown} ({time.perf_counter() - started:.0f} s so far)", flush=True)
    rows, paired, sites = summarise_swap(runs, found)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study_swap.md").write_text(swap_table(rows, paired, sites) + "\n")
    report = {"runs": runs, "accuracy": rows, "paired": paired, "hardness": sites, "hardness_runs": found,
              "ft_lr": ft_lr, "seconds_this_call": time.perf_counter() - started}
    (out / "study_swap.json").write_text(json.dumps(report, indent=1))
    swap_plot(rows, paired, sites, out / "study_swap.png")
    return report
