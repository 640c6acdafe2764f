"""`python -m dee`: the `dee` command."""

import sys

from dee.ops.cli import main

sys.exit(main())
