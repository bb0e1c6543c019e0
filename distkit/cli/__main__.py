"""``python -m distkit.cli``: the same as ``python -m distkit`` and the ``distkit`` console script."""

import sys

from distkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
