"""`python -m bench ...`: the same as `ggserve bench ...`."""

import sys

from bench.cli import main

sys.exit(main())
