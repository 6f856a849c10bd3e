"""The ``softpool3d`` command: one subcommand per task, each a module of this package with ``main(argv) -> int``.

    softpool3d train --config synthmotion
    softpool3d predict video.mp4 --checkpoint runs/x/best.pt
    torchrun --nproc_per_node 2 -m softpool3d train --config ucf101/r3d_18_soft data.root=/data/UCF-101

``python -m softpool3d`` is the same command; ``tools/<name>.py`` in a source checkout calls it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# subcommand -> (module under softpool3d.cli, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a video classifier from a config"),
    "test": ("test", "test a checkpoint on a dataset's test split"),
    "predict": ("predict", "classify videos, or score a long video with sliding windows"),
    "extract-features": ("extract_features", "save a network's pooled features per video"),
    "export": ("export", "export a model to TorchScript or ONNX and check it"),
    "check-videos": ("check_videos", "decode every video of a dataset and report the bad ones"),
    "resize-videos": ("resize_videos", "re-encode a video tree to a shorter side, in parallel"),
    "make-synthmotion": ("make_synthmotion", "generate the SynthMotion dataset"),
    "demo": ("demo", "downsample images, GIFs and clips with soft, max and avg pooling"),
    "configs": ("configs", "list the shipped configs"),
    "env": ("env", "print the environment, for bug reports"),
    "benchmark-ops": ("benchmark_ops", "time SoftPool against max/avg pooling"),
    "benchmark-data": ("benchmark_data", "time clip reading per decoder backend"),
    "benchmark-models": ("benchmark_models", "time models' training steps per pool"),
    "study-pooling": ("study_pooling", "Study 2: accuracy of soft, max and avg pooling"),
    "study-retention": ("study_retention", "Study 1: information kept by each pool"),
    "study-swap": ("study_swap", "Study 3: SoftPool swapped into a max-pool network, then fine-tuned"),
    "study-transfer": ("study_transfer", "pretraining on some classes vs scratch on the others, few videos"),
    "gpu-check": ("gpu_check", "check and time the Triton kernels on a GPU"),
}


# Commands whose worker processes must end with them: SIGTERM unwinds as Ctrl-C does, and either prints one
# line (what was kept) and exits 128 + the signal's number, as a shell reports it.
INTERRUPTIBLE = {
    "check-videos": "the check is incomplete, run it again",
    "resize-videos": "the videos done are kept and a rerun resumes",
}


def _usage() -> str:
    from .. import __version__  # noqa: PLC0415

    width = max(map(len, COMMANDS))
    lines = [f"softpool3d {__version__}", "", "usage: softpool3d <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "softpool3d <command> --help shows a command's options; softpool3d --version the version."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``softpool3d <command> ...``; returns the command's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        from .. import __version__  # noqa: PLC0415

        print(f"softpool3d {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        import difflib  # noqa: PLC0415

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"softpool3d: unknown command {name!r}{hint}; 'softpool3d --help' lists them", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    module = importlib.import_module(f"{__name__}.{module_name}")
    sys.argv[0] = f"softpool3d {name}"   # argparse's prog, in usage and errors
    if name not in INTERRUPTIBLE:
        return int(module.main(rest) or 0)
    from ..datasets.parallel import interrupt_signal, stop_on_sigterm  # noqa: PLC0415

    stop_on_sigterm()
    try:
        return int(module.main(rest) or 0)
    except KeyboardInterrupt as interrupt:
        stopped_by = interrupt_signal(interrupt)
        print(f"{module_name}: interrupted ({stopped_by.name}); {INTERRUPTIBLE[name]}", file=sys.stderr)
        return 128 + stopped_by
