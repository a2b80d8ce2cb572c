"""`python -m sightline`: the same as the `sightline` command."""

import sys

from sightline.cli import main

sys.exit(main())
