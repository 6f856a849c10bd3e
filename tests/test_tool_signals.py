"""SIGTERM and Ctrl-C stop tools/check_videos.py and tools/resize_videos.py together with their workers.

Each test starts a tool on enough copies of one video to keep its 2 workers busy for many seconds, waits
until the workers exist, signals the tool, and then checks that it exits with one line on stderr and
status 128 + the signal, and that no process it started is left. SIGKILL leaves the tool no say: its
workers must die with it all the same. Processes are found by scanning /proc (Linux).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from softpool3d.datasets.io import write_video

from helpers import ROOT, numbered_frames

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc")

COPIES = 2000          # list lines (check_videos) and hard links (resize_videos): many seconds of work


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()      # after '(name)', which may contain spaces
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(pid: int) -> dict[int, int]:
    """Every process below ``pid``, as {pid: start time}."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _, start) in parents.items():
            if ppid == parent and child not in found:
                found[child] = start
                frontier.append(child)
    return found


def _running(processes: dict[int, int]) -> list[int]:
    """The processes that still run: not gone, not a zombie, not a new process that reuses the pid."""
    alive = []
    for pid, start in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[1] != "Z" and stat[2] == start:
            alive.append(pid)
    return alive


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A list naming one 2 s video COPIES times, and a tree of COPIES hard links to it."""
    root = tmp_path_factory.mktemp("busy")
    video = root / "clip.mp4"
    write_video(video, numbered_frames(50, 96, 128, noise=True), fps=25)
    (root / "list.txt").write_text("clip.mp4 0\n" * COPIES)
    (root / "tree").mkdir()
    for i in range(COPIES):
        os.link(video, root / "tree" / f"clip_{i:04d}.mp4")
    return root


def _stop_while_busy(command: list[str], how: signal.Signals, cwd: Path) -> tuple[int, str, list[int]]:
    """Start ``command`` in its own process group, signal it once its 2 workers run, and return its exit status,
    its stderr and the processes below it still running 10 s after it exited (it gets 60 s to exit)."""
    stderr = cwd / f"stderr_{how.name}.txt"        # a file, not a pipe: a worker left behind would hold a pipe open
    with stderr.open("w") as errors:
        tool = subprocess.Popen([sys.executable, *command], cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors,
                                start_new_session=True)
    workers: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 300                 # importing torch takes long on a loaded machine
        while len(workers) < 2 and tool.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = _descendants(tool.pid)
        assert tool.poll() is None, f"the tool ended before it was busy: {stderr.read_text()[-3000:]}"
        assert len(workers) >= 2, "no workers started"
        time.sleep(1.0)                                   # mid-video
        workers.update(_descendants(tool.pid))
        if how == signal.SIGINT:
            os.killpg(tool.pid, signal.SIGINT)            # Ctrl-C in a terminal: the whole process group
        else:
            os.kill(tool.pid, how)                        # kill, systemd, a batch system: the tool alone
        status = tool.wait(timeout=60)
        deadline = time.monotonic() + 10
        while _running(workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        return status, stderr.read_text(), _running(workers)
    finally:
        for pid in [tool.pid, *_running(workers)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        tool.wait()


TOOLS = {
    "check_videos": lambda root: [str(ROOT / "tools" / "check_videos.py"), "--list", "list.txt",
                                  "--csv", "check.csv", "--workers", "2", "--no-progress"],
    "resize_videos": lambda root: [str(ROOT / "tools" / "resize_videos.py"), "tree", "small", "--short-side", "64",
                                   "--workers", "2", "--no-progress"],
}


# SIGKILL once: what it tests (a worker dies with its parent) is the tools' shared worker start.
CASES = [(tool, how) for tool in sorted(TOOLS) for how in (signal.SIGTERM, signal.SIGINT)]
CASES.append(("resize_videos", signal.SIGKILL))


@pytest.mark.parametrize("tool, how", CASES, ids=[f"{tool}-{how.name}" for tool, how in CASES])
def test_a_signal_stops_the_tool_and_its_workers(inputs, tool, how):
    status, stderr, left = _stop_while_busy(TOOLS[tool](inputs), how, inputs)
    assert left == [], f"{tool}: workers {left} outlived it after {how.name}"
    if how == signal.SIGKILL:                             # no last word: the workers die with it all the same
        assert status == -signal.SIGKILL
        return
    assert status == 128 + how, (status, stderr[-3000:])
    assert stderr.count("\n") == 1 and stderr.startswith(f"{tool}: interrupted ({how.name}); "), stderr[-3000:]
