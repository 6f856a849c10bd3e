"""``softpool3d study-swap`` from a source checkout; the code is softpool3d/cli/study_swap.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["study-swap", *sys.argv[1:]]))
