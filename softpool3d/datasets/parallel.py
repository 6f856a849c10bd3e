"""One map over files, in worker processes, with a progress bar: what the dataset tools share.

The workers end with the map: when it returns, when it raises (Ctrl-C is a ``KeyboardInterrupt`` in the
parent), and when the parent dies without a word (on Linux the kernel kills them then). A worker ignores
Ctrl-C, which a terminal sends to every process in the group: the parent alone stops the map. Command-line
tools call ``stop_on_sigterm`` so that SIGTERM unwinds the same way.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

Item, Result = TypeVar("Item"), TypeVar("Result")

PR_SET_PDEATHSIG = 1     # linux/prctl.h: the signal this process gets when its parent dies


class Stopped(KeyboardInterrupt):
    """A termination signal turned into a ``KeyboardInterrupt``, so that it unwinds as Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_on_sigterm() -> None:
    """Make SIGTERM raise ``Stopped`` in the main thread (for command-line tools: this changes the process's
    handler). A running ``map_files`` then ends its workers before the exception reaches the tool."""

    def raise_stopped(signum, frame):
        raise Stopped(signum)

    signal.signal(signal.SIGTERM, raise_stopped)


def interrupt_signal(interrupt: KeyboardInterrupt) -> signal.Signals:
    """The signal behind ``interrupt``: SIGINT for Ctrl-C, else the one ``Stopped`` carries. A process it ends
    exits with status 128 + its number (130 for Ctrl-C, 143 for SIGTERM), as the shell reports it."""
    return signal.Signals(getattr(interrupt, "signum", signal.SIGINT))


def _start_worker(parent: int | None) -> None:
    """In each worker: leave Ctrl-C to the parent, die on SIGTERM, and die with the parent (``parent``: its
    process id; None where a fork server starts the workers and is their parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if parent is not None and os.getppid() != parent:     # the parent died before prctl took effect
            os._exit(1)


def _end_workers(pool: ProcessPoolExecutor) -> None:
    """Drop the queued items and end the workers now, mid-item (what Python 3.14's ``terminate_workers`` does)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)


def map_files(fn: Callable[[Item], Result], items: Sequence[Item], workers: int = 1, progress: bool = True,
              desc: str = "") -> list[Result]:
    """``[fn(item) for item in items]``, in ``workers`` processes when more than one, results in order.

    ``fn`` must be a module-level function (it is pickled to the workers). Whatever stops the map (an
    exception, Ctrl-C, a ``Stopped``) ends the workers before it propagates.
    """
    results: list[Result] = []
    with tqdm(total=len(items), desc=desc, unit="video", disable=not progress) as bar:
        if workers <= 1:
            for item in items:
                results.append(fn(item))
                bar.update(1)
        else:
            context = multiprocessing.get_context()
            parent = None if context.get_start_method() == "forkserver" else os.getpid()
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                                       initargs=(parent,))
            try:
                for result in pool.map(fn, items, chunksize=max(1, min(8, len(items) // (4 * workers)))):
                    results.append(result)
                    bar.update(1)
            except BaseException:
                _end_workers(pool)
                raise
            pool.shutdown()
    return results
