"""`python -m plugin.train ...`: the training CLI (see plugin/cli.py for the flags)."""

import sys

from plugin.cli import main

if __name__ == "__main__":
    sys.exit(main())
