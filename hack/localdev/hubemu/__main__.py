"""`python -m localdev.hubemu`: see `cli.py`."""

import sys

from localdev.hubemu.cli import main

sys.exit(main())
