"""``python -m fl_client`` is ``hefl-client``."""

import sys

from fl_client.cli import main

sys.exit(main())
