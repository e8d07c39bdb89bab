"""Replicas of one model behind several base URLs: least-outstanding-requests balancing with failover.

Why least-outstanding rather than round-robin: step lengths vary by two orders of magnitude (a one-token
glimpse, a 512-token step), so equal request counts are not equal load; the replica with the fewest
requests in flight is the best guess of the least loaded one (Envoy's and vLLM's router default).

Prefix affinity: a routed request sends its growing context to the same model again and again, and only
the replica that saw the previous call holds that prefix in its cache. :meth:`ReplicaPool.acquire` keeps
a context on the replica that served it last unless that replica is down or busier than the least
loaded one by more than ``affinity_slack`` requests.

A replica whose call fails with a connection error, a timeout, 429 or 5xx is taken out for
``retry_after_s``; after that a health check (or, if none ran, the next call) lets it back in.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from glimp_llm.errors import EngineUnavailableError, NoReplicaError


@dataclass
class Replica:
    """One server root (``http://host:port``, without ``/v1``)."""

    url: str
    in_flight: int = 0
    down_until: float = 0.0
    failures: int = 0
    served: int = 0
    last_error: str = ""

    def available(self, now: float) -> bool:
        return self.down_until <= now


class ReplicaPool:
    """Chooses a replica per call; remembers which served which context prefix."""

    def __init__(
        self, urls: Sequence[str], *, retry_after_s: float = 5.0, affinity_slack: int = 2, affinity_size: int = 4096
    ) -> None:
        if not urls:
            raise EngineUnavailableError("no base URL: give at least one server in base_urls")
        self.replicas = [Replica(normalize_url(u)) for u in urls]
        self.retry_after_s = retry_after_s
        self.affinity_slack = affinity_slack
        self._affinity: OrderedDict[int, Replica] = OrderedDict()
        self._affinity_size = affinity_size

    def acquire(self, key: int | None = None) -> Replica:
        """The replica for the next call (its ``in_flight`` is incremented); release it with :meth:`release`.

        Raises :class:`EngineUnavailableError` when every replica is out; it is transient for the caller's
        retry loop (the soonest one comes back after ``retry_after_s``)."""
        now = time.monotonic()
        live = [r for r in self.replicas if r.available(now)]
        if not live:
            soonest = min(self.replicas, key=lambda r: r.down_until)
            raise NoReplicaError(
                f"all {len(self.replicas)} replicas are out after failures (last: {soonest.last_error}); "
                f"the first is retried in {max(0.0, soonest.down_until - now):.1f} s. Check the servers"
            )
        least = min(r.in_flight for r in live)
        choice = self._affinity.get(key) if key is not None else None
        if choice is None or not choice.available(now) or choice.in_flight > least + self.affinity_slack:
            choice = random.choice([r for r in live if r.in_flight == least])
        choice.in_flight += 1
        return choice

    def release(
        self, replica: Replica, *, key: int | None = None, failed: str | None = None, hard: bool = False
    ) -> None:
        """End a call. ``failed`` (a reason) counts a failure; a ``hard`` one (connection refused) or a second
        in a row takes the replica out for ``retry_after_s``. One dropped connection alone does not: a pooled
        keep-alive connection the server closed meanwhile fails once and the retry succeeds."""
        replica.in_flight -= 1
        if failed is not None:
            replica.failures += 1
            replica.last_error = failed
            if hard or replica.failures >= 2:
                self.mark_down(replica, failed)
            return
        replica.served += 1
        replica.failures = 0
        if key is not None:
            self._affinity[key] = replica
            self._affinity.move_to_end(key)
            while len(self._affinity) > self._affinity_size:
                self._affinity.popitem(last=False)

    def mark_down(self, replica: Replica, reason: str) -> None:
        replica.failures = max(replica.failures, 1)
        replica.last_error = reason
        replica.down_until = time.monotonic() + self.retry_after_s

    def mark_up(self, replica: Replica) -> None:
        replica.down_until = 0.0
        replica.failures = 0

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)


def normalize_url(url: str) -> str:
    """``http://h:p/v1/`` -> ``http://h:p``: endpoints are built from the server root (llama.cpp's native
    ones and vLLM's /tokenize live outside /v1)."""
    u = url.strip().rstrip("/").removesuffix("/v1")
    if not u.startswith(("http://", "https://")):
        raise EngineUnavailableError(f"base URL {url!r} must start with http:// or https://")
    return u


def prefix_key(context: Sequence[int], length: int = 64) -> int:
    """A key for the first ``length`` tokens of a context: requests sharing their prompt share a key."""
    return hash(tuple(context[:length]))
