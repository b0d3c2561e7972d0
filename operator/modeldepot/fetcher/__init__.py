"""The fetcher: downloads a Hub repository at one commit into a storage root, verified and atomic.

`run.fetch` is the entry point used by `modeldepot fetch`; see docs/internals.md for the contract.
"""

import sys

# httpx imports its command-line tool when it can (rich, click, pygments: ~70 ms and ~5 MB on every
# fetch, measured) and falls back to a stub on ImportError, which a None entry in sys.modules
# raises. Nothing here uses that tool.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
