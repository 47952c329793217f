"""`python -m securemsg` is the `securemsg` command."""

import sys

from securemsg.cli import main

sys.exit(main())
