"""``python -m benchmarks.flower [--quick] [--out-dir DIR] [--fresh] [--kept] [--rerender]``."""

import sys

from benchmarks.flower._main import main

sys.exit(main())
