"""``python -m funcrl ...``: the funcrl command line (the same as the Rust ``funcrl`` binary)."""

import sys

from . import _core
from ._run import child_command


def main() -> int:
    return _core.cli(["funcrl", *sys.argv[1:]], child_command())


if __name__ == "__main__":
    sys.exit(main())
