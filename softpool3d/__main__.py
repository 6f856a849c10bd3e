"""``python -m softpool3d <command>``: the ``softpool3d`` command (also under ``torchrun -m softpool3d``)."""

import sys

from softpool3d.cli import main

if __name__ == "__main__":
    sys.exit(main())
