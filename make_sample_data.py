#!/usr/bin/env python3
"""Build local_test_data/: the small sample catalog, from Fashion-MNIST and bundled photos."""

import sys

from simfusion.cli.common import run_script
from simfusion.cli.sample_data import main

if __name__ == "__main__":
    sys.exit(run_script(main))
