#!/usr/bin/env python3
"""Crop each record's main object, pad and resize it to a fixed thumbnail."""

import sys

from simfusion.cli.common import run_script
from simfusion.cli.thumbnail import main

if __name__ == "__main__":
    sys.exit(run_script(main))
