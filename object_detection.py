#!/usr/bin/env python3
"""Find the main object in each record's image and add its box (`detections`, `box`)."""

import sys

from simfusion.cli.common import run_script
from simfusion.cli.detect import main

if __name__ == "__main__":
    sys.exit(run_script(main))
