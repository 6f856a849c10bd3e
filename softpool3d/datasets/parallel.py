"""One map over files, in worker processes, with a progress bar: what the dataset tools share."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

Item, Result = TypeVar("Item"), TypeVar("Result")


def map_files(fn: Callable[[Item], Result], items: Sequence[Item], workers: int = 1, progress: bool = True,
              desc: str = "") -> list[Result]:
    """``[fn(item) for item in items]``, in ``workers`` processes when more than one, results in order.

    ``fn`` must be a module-level function (it is pickled to the workers).
    """
    results: list[Result] = []
    with tqdm(total=len(items), desc=desc, unit="video", disable=not progress) as bar:
        if workers <= 1:
            for item in items:
                results.append(fn(item))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(fn, items, chunksize=max(1, min(8, len(items) // (4 * workers)))):
                    results.append(result)
                    bar.update(1)
    return results
