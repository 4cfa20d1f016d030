"""``python -m hefl_admin``: the same as the ``hefl-admin`` command."""

import sys

from hefl_admin.cli import main

sys.exit(main())
