"""List the shipped configs; ``softpool3d train --config NAME`` takes any of these names.

    softpool3d configs            # every experiment config
    softpool3d configs --all      # with the datasets/ and models/ parts they build on
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..engine.config import shipped_configs

PARTS = ("datasets", "models")   # folders of pieces that experiments build on, not experiments themselves


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="also list the datasets/ and models/ parts")
    args = parser.parse_args(argv)
    root, names = shipped_configs()
    for name in names:
        if args.all or name.split("/")[0] not in PARTS:
            print(name)
    print(f"({root})")
    return 0
