#!/usr/bin/env python3
"""Build the catalog's fused search index, or add / remove catalog items without retraining."""

import sys

from simfusion.cli.common import run_script
from simfusion.cli.index import main

if __name__ == "__main__":
    sys.exit(run_script(main))
