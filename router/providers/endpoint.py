"""Compatibility alias: the Endpoint model lives in :mod:`router.endpoint` (a plain
config model, importable by the policy side without pulling in any I/O library)."""

from router.endpoint import Endpoint

__all__ = ["Endpoint"]
