"""``python -m benchmarks.suite [--quick] [--out-dir DIR]``."""

import sys

from benchmarks.suite._run import main

sys.exit(main())
