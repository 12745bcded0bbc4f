#!/usr/bin/env python3
"""Near-duplicate groups of a trained catalog (imagededup's find_duplicates shape)."""

import sys

from simfusion.cli.common import run_script
from simfusion.cli.duplicates import main

if __name__ == "__main__":
    sys.exit(run_script(main))
