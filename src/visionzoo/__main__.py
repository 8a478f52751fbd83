"""``python -m visionzoo ...`` (and ``torchrun ... -m visionzoo train ...``) runs the CLI."""

import sys

from visionzoo.cli import main

sys.exit(main())
