#!/usr/bin/env python3
"""Precision@k, recall@k and mAP@k of every view, the fusion and baselines on a labelled catalog."""

import sys

from simfusion.cli.common import run_script
from simfusion.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(run_script(main))
