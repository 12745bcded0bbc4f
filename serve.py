#!/usr/bin/env python3
"""Serve a trained catalog over HTTP: the search API and a web page."""

import sys

from simfusion.cli.common import run_script
from simfusion.cli.serve import main

if __name__ == "__main__":
    sys.exit(run_script(main))
