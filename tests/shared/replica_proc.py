"""One router replica in its own OS process, driven over stdin/stdout (JSON lines).

Used by tests/shared/test_replicas.py (and bench/replicas.py) to run several live
routers on one Redis::

    python tests/shared/replica_proc.py CONFIG.json [REPLICA_NAME]

The config's ``shared:`` section (if any) makes the router share state through Redis.
Commands, one JSON object a line, each answered by one JSON line:

* ``{"op": "start"}`` — connect the shared state; answers its status;
* ``{"op": "route", "n": N, "period_s": P, "offset_s": O, "start_at": T, "prefix": S}``
  — route N tasks, task j at wall time T + O + j * P (P = 0: all at once), and answer
  every result (success, cost, error, attempts' models and kinds, skips) plus when
  each model's breaker was first seen open (wall clock);
* ``{"op": "fire", "n": N, "prefix": S}`` — start N tasks and answer at once;
* ``{"op": "status"}`` — the shared status, breaker states and spend so far;
* ``{"op": "quit"}`` — close and exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

from router import Task, load_config
from router.breaker import BreakerState
from router.live import Router
from router.result import TaskResult


def _result(r: TaskResult) -> dict[str, Any]:
    return {
        "id": r.task_id,
        "success": r.success,
        "cost": r.cost_usd,
        "error": r.error,
        "attempts": [[a.model, a.kind] for a in r.attempts],
        "skips": [list(s) for s in r.skips],
    }


class Replica:
    def __init__(self, config_path: str) -> None:
        self.router = Router(load_config(config_path), validate=False)
        self.opened_at: dict[str, float] = {}
        self.background: list[asyncio.Task[TaskResult]] = []

    async def watch(self) -> None:
        """Note when each model's breaker is first seen open (1 ms polling)."""
        policy = self.router.policy
        while True:
            for m in policy.models:
                if m.id not in self.opened_at and policy.breakers[m.index].state is (
                    BreakerState.OPEN
                ):
                    self.opened_at[m.id] = time.time()
            await asyncio.sleep(0.001)

    async def route(self, cmd: dict[str, Any]) -> dict[str, Any]:
        n, period = int(cmd["n"]), float(cmd.get("period_s", 0.0))
        start = float(cmd.get("start_at") or time.time()) + float(cmd.get("offset_s", 0.0))
        prefix = cmd.get("prefix", "t")
        task_type = cmd.get("task_type", "json")
        tasks = []
        for j in range(n):
            delay = start + j * period - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = Task(f"{prefix}-{j}", task_type, payload="{}")
            tasks.append(asyncio.create_task(self.router.route(task)))
        results = await asyncio.gather(*tasks)
        return {"results": [_result(r) for r in results], "opened_at": self.opened_at}

    def status(self) -> dict[str, Any]:
        policy = self.router.policy
        shared = self.router.shared_status()
        return {
            "status": None if shared is None else shared.as_dict(),
            "breakers": {m.id: policy.breakers[m.index].state.value for m in policy.models},
            "spend": policy.ledger.all_time_usd,
            "opened_at": self.opened_at,
            "in_flight": sum(not t.done() for t in self.background),
        }


async def main(config_path: str) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")
    replica = Replica(config_path)
    watcher = asyncio.create_task(replica.watch())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "start":
            # Build every provider now (an HTTP client's first build costs tens of ms of
            # CPU, which would otherwise land in the middle of a measurement).
            for m in replica.router.config.models:
                replica.router.provider(m.id)
            if replica.router.shared is not None:
                await replica.router.shared.start()
            reply(replica.status())
        elif op == "route":
            reply(await replica.route(cmd))
        elif op == "fire":
            prefix = cmd.get("prefix", "f")
            for j in range(int(cmd["n"])):
                task = Task(f"{prefix}-{j}", cmd.get("task_type", "json"), payload="{}")
                replica.background.append(asyncio.create_task(replica.router.route(task)))
            await asyncio.sleep(0)
            reply({"started": int(cmd["n"])})
        elif op == "status":
            reply(replica.status())
        elif op == "quit":
            break
    watcher.cancel()
    for t in replica.background:
        t.cancel()
    await asyncio.gather(*replica.background, return_exceptions=True)
    await replica.router.aclose()
    reply({"bye": True})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
