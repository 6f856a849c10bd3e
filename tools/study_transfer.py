"""``softpool3d study-transfer`` from a source checkout; the code is softpool3d/cli/study_transfer.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from softpool3d.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["study-transfer", *sys.argv[1:]]))
