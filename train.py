#!/usr/bin/env python3
"""Train one unsupervised autoencoder per view and encode the catalog into the feature store."""

import sys

from simfusion.cli.common import run_script
from simfusion.cli.train import main

if __name__ == "__main__":
    sys.exit(run_script(main))
