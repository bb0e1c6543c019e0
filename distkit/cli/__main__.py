import sys

from distkit.cli import main

sys.exit(main())
