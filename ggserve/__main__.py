"""``python -m ggserve`` is the ``ggserve`` command."""

import sys

from ggserve.cli import main

sys.exit(main())
