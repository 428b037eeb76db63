"""``python -m app.cli``: the ``pulseboard`` command."""

import sys

from app.cli import main

sys.exit(main())
