"""``python -m fl_server`` is ``hefl-server``."""

import sys

from fl_server.cli import main

sys.exit(main())
