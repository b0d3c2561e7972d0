"""Kept for tests not yet moved to support.py (test_real_node.py): `wait_until` lives in support.py."""

from support import wait_until

__all__ = ["wait_until"]
