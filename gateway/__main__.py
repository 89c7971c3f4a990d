"""`python -m gateway` is `city-gateway`."""

import sys

from gateway.cli import main

sys.exit(main())
