"""State shared by several replicas of the router: breakers, spend, statistics.

* :class:`SharedState` — the interface a driver uses around the policy's decisions
  (:func:`admit`), with its contract;
* :class:`LocalState` — in-process (the reference implementation; replicas in one
  process can share a :class:`LocalStore`);
* :class:`RedisState` — Redis (``shared:`` in the config; see :mod:`router.shared.redis`).

In-process state without any of these stays the default: a :class:`~router.live.Router`
without a ``shared:`` section behaves exactly as a single replica always has.
"""

from router.shared.base import SharedState, SharedStatus, admit, mask_url
from router.shared.local import LocalState, LocalStore
from router.shared.redis import RedisState

__all__ = [
    "LocalState",
    "LocalStore",
    "RedisState",
    "SharedState",
    "SharedStatus",
    "admit",
    "mask_url",
]
