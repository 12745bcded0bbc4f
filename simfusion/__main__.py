import sys

from simfusion.cli.main import main

sys.exit(main())
