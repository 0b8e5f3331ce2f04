"""Multi-host training without TensorFlow: the rendezvous that forms the cluster, and the config that allows it.

The rendezvous is plain files in a shared folder; these tests run it in real separate interpreters (and in
threads where the test must play a worker's part step by step). TensorFlow itself is exercised in
tests/integration/test_multiworker.py and through Airflow in tests/integration/test_multihost_dag.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ml_tasks.config import RunConfig, TrainConfig
from ml_tasks.errors import ConfigError
from ml_tasks.training.rendezvous import (
    CLUSTER_FILE,
    DONE_FILE,
    Rendezvous,
    RendezvousTimeout,
    tf_config,
    worker_address,
)

FAST = {"heartbeat_s": 0.1, "poll_s": 0.05}

WORKER = """
import json, sys
from pathlib import Path
from ml_tasks.training.rendezvous import Rendezvous
folder, index = Path(sys.argv[1]), int(sys.argv[2])
rendezvous = Rendezvous(folder, index, 2, heartbeat_s=0.1, poll_s=0.05, stale_s=10)
rendezvous.register(f"127.0.0.1:{7000 + index}")
addresses = rendezvous.wait(timeout_s=60)
print(json.dumps({"addresses": addresses, "generation": rendezvous.cluster["generation"], "token": rendezvous.token}))
"""


def test_two_processes_agree_on_one_cluster_in_index_order(tmp_path: Path) -> None:
    # Worker 1 starts first: order of arrival does not matter, the index does.
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(i)], stdout=subprocess.PIPE, text=True)
             for i in (1, 0)]
    outs = [json.loads(p.communicate(timeout=90)[0].strip().splitlines()[-1]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    worker1, chief = outs
    assert chief["addresses"] == worker1["addresses"] == ["127.0.0.1:7000", "127.0.0.1:7001"]
    assert chief["generation"] == worker1["generation"]
    cluster = json.loads((tmp_path / CLUSTER_FILE).read_text())
    assert cluster["tokens"] == [chief["token"], worker1["token"]]
    # what each worker's TF_CONFIG then says
    assert json.loads(tf_config(chief["addresses"], 1))["task"] == {"type": "worker", "index": 1}


def test_timeout_names_the_missing_workers_and_the_pool(tmp_path: Path) -> None:
    chief = Rendezvous(tmp_path, 0, 3, stale_s=5, **FAST)
    chief.register("127.0.0.1:7000")
    with pytest.raises(RendezvousTimeout) as raised:
        chief.wait(timeout_s=0.5)
    message = str(raised.value)
    assert "worker(s) [1, 2] not registered" in message
    assert "pool 'ratchet_gpu' needs 3 free slots" in message and "queue 'gpu'" in message


def _heartbeating(rendezvous: Rendezvous, stop: threading.Event) -> threading.Thread:
    def beat() -> None:
        while not stop.is_set():
            rendezvous.heartbeat()
            time.sleep(0.05)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    return thread


def test_an_entry_left_by_a_dead_attempt_is_never_used(tmp_path: Path) -> None:
    # A worker 1 attempt that was killed: its entry stays, but its heartbeat never moves again.
    (tmp_path / "worker-1.json").write_text(json.dumps(
        {"index": 1, "address": "10.9.9.9:1", "token": "try1-dead", "state": "running", "beat": 41}))
    chief = Rendezvous(tmp_path, 0, 2, stale_s=5, **FAST)
    chief.register("127.0.0.1:7000")
    with pytest.raises(RendezvousTimeout, match=r"\[1\] not registered \(\[1\] only left entries of earlier attempts"):
        chief.wait(timeout_s=0.6)

    # The retry of worker 1 overwrites the entry with a new token: now the cluster forms, with the new address.
    retry = Rendezvous(tmp_path, 1, 2, token="try2-live", stale_s=5, **FAST)
    retry.register("127.0.0.1:7001")
    stop = threading.Event()
    _heartbeating(retry, stop)
    try:
        assert chief.wait(timeout_s=10) == ["127.0.0.1:7000", "127.0.0.1:7001"]
        assert chief.cluster is not None and chief.cluster["tokens"][1] == "try2-live"
        assert retry.wait(timeout_s=10) == ["127.0.0.1:7000", "127.0.0.1:7001"]
    finally:
        stop.set()


def test_a_member_that_restarts_or_falls_silent_ends_the_cluster_attempt(tmp_path: Path) -> None:
    chief = Rendezvous(tmp_path, 0, 2, stale_s=0.5, **FAST)
    member = Rendezvous(tmp_path, 1, 2, stale_s=0.5, **FAST)
    chief.register("127.0.0.1:7000")
    member.register("127.0.0.1:7001")
    stop = threading.Event()
    thread = _heartbeating(member, stop)
    try:
        chief.wait(timeout_s=10)
        assert member.wait(timeout_s=10) is not None
        assert chief.lost_members() == []
    finally:
        stop.set()
        thread.join()
    time.sleep(0.7)  # no heartbeat for longer than stale_s (as when its host dies)
    (lost,) = chief.lost_members()
    assert lost.startswith("worker 1: no heartbeat for"), lost

    # A retry of worker 1 (a new token) means the cluster the chief runs in is gone, too.
    Rendezvous(tmp_path, 1, 2, token="another-attempt", **FAST).register("127.0.0.1:7002")
    assert chief.lost_members() == ["worker 1: restarted (a new attempt registered)"]
    # A member that finished is not lost, however long it stays silent.
    member.set_state("finished")
    time.sleep(0.6)
    assert chief.lost_members() == []


def test_a_finished_cluster_is_not_trained_again(tmp_path: Path) -> None:
    (tmp_path / DONE_FILE).write_text(json.dumps({"generation": "g1", "workers": 2, "record": {}}))
    worker = Rendezvous(tmp_path, 1, 2, **FAST)
    worker.register("127.0.0.1:7001")
    assert worker.wait(timeout_s=5) is None


def test_the_chief_finalises_alone_when_the_others_finished_before_it_failed(tmp_path: Path) -> None:
    (tmp_path / CLUSTER_FILE).write_text(json.dumps(
        {"generation": "g1", "addresses": ["h0:1", "h1:1"], "tokens": ["chief-try1", "w1-try1"]}))
    (tmp_path / "worker-1.json").write_text(json.dumps(
        {"index": 1, "address": "h1:1", "token": "w1-try1", "state": "finished", "beat": 9}))
    chief = Rendezvous(tmp_path, 0, 2, token="chief-try2", **FAST)
    chief.register("h0:2")
    assert chief.wait(timeout_s=5) == ["h0:2"]
    assert chief.cluster is not None and chief.cluster["alone"]


def test_worker_address_uses_the_host_override_and_a_free_port_of_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("RATCHET_WORKER_HOST", "gpu-7.example")
    host, port = worker_address("").rsplit(":", 1)
    assert host == "gpu-7.example" and int(port) > 0
    with socket.socket() as taken:
        taken.bind(("", 0))
        busy = taken.getsockname()[1]
        assert worker_address(f"{busy}-{busy + 20}") != f"gpu-7.example:{busy}"
    monkeypatch.delenv("RATCHET_WORKER_HOST")
    assert worker_address("").rsplit(":", 1)[0] == socket.getfqdn()


def test_train_workers_is_for_the_keras_mlp_only() -> None:
    assert TrainConfig(workers=4).workers == 4
    params = {"dataset": "synthetic", "train_workers": 2}
    assert RunConfig.from_params(params).train.workers == 2
    with pytest.raises(ConfigError, match="only keras_mlp trains across hosts"):
        RunConfig.from_params({**params, "model_family": "random_forest"})
    with pytest.raises(ConfigError, match="adversarial training runs on one host only"):
        TrainConfig(workers=2, adversarial_epsilon=0.1)
    for bad in (0, 9):
        with pytest.raises(ConfigError, match=r"train_workers must be 1..8"):
            TrainConfig(workers=bad)
