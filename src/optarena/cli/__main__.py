"""``python -m optarena.cli``: the same as the ``optarena`` command."""

import sys

from optarena.cli import main

sys.exit(main())
