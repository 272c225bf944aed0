#!/usr/bin/env python
"""Run the whole report: python run_all.py --dataset ucmerced [--quick] (see --help)."""

import sys

from scenelib.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
