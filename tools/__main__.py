"""`python -m tools` is `city-node`."""

import sys

from tools.cli import main

sys.exit(main())
