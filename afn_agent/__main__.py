"""`python -m afn_agent` is the `afn-agent` command."""

import sys

from .cli import main

sys.exit(main())
