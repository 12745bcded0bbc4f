#!/usr/bin/env python3
"""Find the catalog items most similar to query images (fused index, business rules, montage)."""

import sys

from simfusion.cli.common import run_script
from simfusion.cli.predict import main

if __name__ == "__main__":
    sys.exit(run_script(main))
