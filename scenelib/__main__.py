"""``python -m scenelib predict ...``: the ``scenelib`` console script."""

import sys

from .deploy.cli import main

if __name__ == "__main__":
    sys.exit(main())
