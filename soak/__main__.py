"""``python -m soak`` (``make soak``): the soak of :mod:`soak.harness`."""

import sys

from soak.harness import main

sys.exit(main())
