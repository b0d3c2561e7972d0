"""The fetcher: downloads a Hub repository at one commit into a storage root, verified and atomic.

`run.fetch` is the entry point used by `modeldepot fetch`; see docs/internals.md for the contract.
"""
