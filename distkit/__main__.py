"""``python -m distkit``: the same as the ``distkit`` console script."""

import sys

from distkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
