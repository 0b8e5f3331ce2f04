"""The file rendezvous through which the hosts of a multi-worker training cluster find each other at run time.

Airflow cannot place a task on a host, so each mapped `train_worker` task registers its own `host:port` in a
folder of the run (on the shared RATCHET_HOME), the chief publishes the cluster once all N are alive, and each
task then runs its worker with the resulting `TF_CONFIG` (`tf_config`; see `ml_tasks.training.multiworker`).
Plain files, no TensorFlow: the protocol is tested in separate interpreters without it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ml_tasks.constants import GPU_POOL, GPU_QUEUE, RENDEZVOUS_HEARTBEAT_S
from ml_tasks.environment_variables import (
    RATCHET_RENDEZVOUS_STALE_S,
    RATCHET_RENDEZVOUS_TIMEOUT_S,
    RATCHET_WORKER_HOST,
    RATCHET_WORKER_PORTS,
)
from ml_tasks.errors import RatchetError

log = logging.getLogger(__name__)

ENTRY_PREFIX = "worker-"
CLUSTER_FILE = "cluster.json"
DONE_FILE = "done.json"
LIVE_STATES = ("waiting", "running")


def tf_config(workers: list[str], index: int) -> str:
    """The `TF_CONFIG` JSON of worker `index` in a cluster of `workers` ("host:port"); worker 0 is the chief."""
    if not workers:
        raise ValueError("a cluster needs at least one worker")
    if not 0 <= index < len(workers):
        raise ValueError(f"worker index {index} out of range for {len(workers)} workers")
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})


class RendezvousTimeout(RatchetError):
    """Not every worker of the cluster registered in time (retried: the pool may have been busy)."""


def worker_address(ports: str | None = None, host: str | None = None) -> str:
    """`host:port` this worker listens on: RATCHET_WORKER_HOST (else the FQDN) and a free port of RATCHET_WORKER_PORTS."""
    host = host or RATCHET_WORKER_HOST.get() or socket.getfqdn()
    spec = (RATCHET_WORKER_PORTS.get() if ports is None else ports).strip()
    if not spec:
        candidates: list[int] = [0]
    elif "-" in spec:
        low, high = (int(p) for p in spec.split("-", 1))
        candidates = list(range(low, high + 1))
    else:
        candidates = [int(spec)]
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
            return f"{host}:{sock.getsockname()[1]}"
    raise RatchetError(f"no free port in {RATCHET_WORKER_PORTS.name}={spec!r} on {host}")


@dataclass
class _Seen:
    token: str
    beat: int
    changed_at: float  # this process's monotonic clock: no comparison of clocks across hosts
    advanced: bool  # its heartbeat moved while we watched: a live attempt, not an entry a dead one left


class Rendezvous:
    """One worker's side of the rendezvous in `folder` (shared by every host: the run's folder on RATCHET_HOME).

    Each worker writes `worker-<index>.json` (its address and a token unique to this attempt) and rewrites it every
    `heartbeat_s` with a counter. An entry counts as alive only once its counter has moved while we watched, and
    until it has not moved for `stale_s`, so an entry a killed attempt left behind is never used and clocks of
    different hosts are never compared. The chief (index 0) publishes `cluster.json` (addresses and tokens) once all
    N are alive; the others take the cluster that names their own token. A retry registers a new token, which
    the running members notice (`lost_members`): the whole cluster attempt fails and Airflow retries it.
    """

    def __init__(self, folder: Path, index: int, workers: int, token: str | None = None,
                 heartbeat_s: float = RENDEZVOUS_HEARTBEAT_S, stale_s: float | None = None, poll_s: float = 0.5) -> None:
        if not 0 <= index < workers:
            raise ValueError(f"worker index {index} out of range for {workers} workers")
        self.folder, self.index, self.workers = folder, index, workers
        self.token = token or uuid.uuid4().hex
        self.heartbeat_s, self.poll_s = heartbeat_s, poll_s
        # The declaration has a default: never None.
        self.stale_s = stale_s if stale_s is not None else cast(float, RATCHET_RENDEZVOUS_STALE_S.get())
        self.address = ""
        self.state = "waiting"
        self.beat = 0
        self._last_write = 0.0
        self._seen: dict[int, _Seen] = {}
        self.cluster: dict[str, Any] | None = None

    # ---- files ------------------------------------------------------------------------------------------
    def _entry(self, index: int) -> Path:
        return self.folder / f"{ENTRY_PREFIX}{index}.json"

    def _write_own(self) -> None:
        from ml_tasks.io import write_json

        self.beat += 1
        write_json(self._entry(self.index), {
            "index": self.index, "address": self.address, "token": self.token, "state": self.state,
            "beat": self.beat, "host": socket.gethostname(), "pid": os.getpid(),
        })
        self._last_write = time.monotonic()

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):  # not there (yet), or replaced between listing and reading
            return None

    def register(self, address: str) -> None:
        """Write (or overwrite, on a retry) this worker's entry with this attempt's token."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.address = address
        self._write_own()
        log.info("worker %s/%s registered %s (attempt %s) in %s", self.index, self.workers, address, self.token,
                 self.folder)

    def heartbeat(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_write >= self.heartbeat_s:
            self._write_own()

    def set_state(self, state: str) -> None:
        self.state = state
        self._write_own()

    def observe(self) -> dict[int, dict[str, Any]]:
        """The entries now, and which of them have shown a heartbeat while this worker watched."""
        now = time.monotonic()
        entries: dict[int, dict[str, Any]] = {}
        for index in range(self.workers):
            entry = self._read(self._entry(index))
            if entry is None:
                self._seen.pop(index, None)
                continue
            entries[index] = entry
            seen = self._seen.get(index)
            token, beat = str(entry.get("token")), int(entry.get("beat", 0))
            if seen is None or seen.token != token:
                self._seen[index] = _Seen(token, beat, now, advanced=index == self.index)
            elif seen.beat != beat:
                seen.beat, seen.changed_at, seen.advanced = beat, now, True
        return entries

    def alive(self, index: int, entries: dict[int, dict[str, Any]]) -> bool:
        if index == self.index:
            return True
        entry, seen = entries.get(index), self._seen.get(index)
        return (entry is not None and seen is not None and entry.get("state") in LIVE_STATES and seen.advanced
                and time.monotonic() - seen.changed_at <= self.stale_s)

    def done(self) -> dict[str, Any] | None:
        """The record of a cluster of this run that already finished (a rerun, or a retry after the chief saved)."""
        return self._read(self.folder / DONE_FILE)

    # ---- forming the cluster ------------------------------------------------------------------------------
    def wait(self, timeout_s: float | None = None) -> list[str] | None:
        """Addresses in index order once the cluster is formed; None when a cluster of this run already finished."""
        if timeout_s is None:
            timeout_s = cast(float, RATCHET_RENDEZVOUS_TIMEOUT_S.get())  # the declaration has a default
        started = time.monotonic()
        while True:
            self.heartbeat()
            if self.done() is not None:
                return None
            entries = self.observe()
            cluster = self._read(self.folder / CLUSTER_FILE)
            if self.index == 0:
                if all(self.alive(i, entries) for i in range(self.workers)):
                    return self._publish(entries)
                if cluster is not None and self._peers_finished(cluster, entries):
                    # Every other worker of the last cluster finished; the chief failed after them (saving).
                    # Its checkpoint holds the trained weights: a cluster of one restores it and saves the model.
                    log.warning("the other workers of cluster %s finished: the chief finalises alone",
                                cluster.get("generation"))
                    self.cluster = {"generation": cluster.get("generation"), "addresses": [self.address],
                                    "tokens": [self.token], "alone": True}
                    return [self.address]
            elif cluster is not None and cluster.get("tokens", [None] * self.workers)[self.index] == self.token:
                self.cluster = cluster
                self._reset_watch()
                return list(cluster["addresses"])
            waited = time.monotonic() - started
            if waited > timeout_s:
                raise RendezvousTimeout(self._timeout_message(entries, waited))
            time.sleep(self.poll_s)

    def _peers_finished(self, cluster: dict[str, Any], entries: dict[int, dict[str, Any]]) -> bool:
        tokens = cluster.get("tokens", [])
        return len(tokens) == self.workers and all(
            entries.get(i, {}).get("state") == "finished" and entries[i].get("token") == tokens[i]
            for i in range(1, self.workers))

    def _publish(self, entries: dict[int, dict[str, Any]]) -> list[str]:
        from ml_tasks.io import write_json

        entries[self.index] = {"address": self.address, "token": self.token}
        cluster = {"generation": uuid.uuid4().hex, "addresses": [entries[i]["address"] for i in range(self.workers)],
                   "tokens": [entries[i]["token"] for i in range(self.workers)]}
        write_json(self.folder / CLUSTER_FILE, cluster)
        self.cluster = cluster
        self._reset_watch()
        log.info("cluster %s formed: %s", cluster["generation"], ", ".join(cluster["addresses"]))
        return list(cluster["addresses"])

    def _reset_watch(self) -> None:
        """Silence is counted from the moment the cluster formed, not from a member's registration."""
        now = time.monotonic()
        for seen in self._seen.values():
            seen.changed_at = max(seen.changed_at, now)

    def _timeout_message(self, entries: dict[int, dict[str, Any]], waited: float) -> str:
        missing = [i for i in range(self.workers) if not self.alive(i, entries)]
        stale = [i for i in missing if i in entries]
        if self.index != 0 and not missing:
            why = "every worker is registered, but the chief (worker 0) published no cluster with this attempt"
        else:
            why = (f"worker(s) {missing} not registered" + (f" ({stale} only left entries of earlier attempts "
                                                             "that show no heartbeat)" if stale else ""))
        return (f"rendezvous of {self.workers} workers in {self.folder} timed out after {waited:.0f}s: {why}. "
                f"All {self.workers} train_worker tasks must run at the same time: pool {GPU_POOL!r} needs "
                f"{self.workers} free slots and Celery workers consuming queue {GPU_QUEUE!r} must take them "
                f"(their hosts must reach each other on the registered ports)")

    # ---- watching the running cluster ---------------------------------------------------------------------
    def lost_members(self) -> list[str]:
        """Members of the formed cluster that failed, restarted (a new token) or stopped heartbeating."""
        if self.cluster is None or self.cluster.get("alone"):
            return []
        entries = self.observe()
        lost = []
        for index, token in enumerate(self.cluster["tokens"]):
            if index == self.index:
                continue
            entry, seen = entries.get(index), self._seen.get(index)
            if entry is None:
                lost.append(f"worker {index}: entry gone")
            elif entry.get("token") != token:
                lost.append(f"worker {index}: restarted (a new attempt registered)")
            elif entry.get("state") == "failed":
                lost.append(f"worker {index}: failed")
            elif (entry.get("state") != "finished" and seen is not None
                  and time.monotonic() - seen.changed_at > self.stale_s):
                lost.append(f"worker {index}: no heartbeat for {time.monotonic() - seen.changed_at:.0f}s")
        return lost
