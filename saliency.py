#!/usr/bin/env python3
"""Write saliency, edge and foreground views of each record's thumbnail."""

import sys

from simfusion.cli.common import run_script
from simfusion.cli.views import main

if __name__ == "__main__":
    sys.exit(run_script(main))
