"""The real worker process against a real server: results, SIGKILL recovery, SIGTERM, the spool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from ranktune.search.schedule import RankSchedule
from ranktune.service.app import create_app
from ranktune.service.db.models import Lease, Trial, TrialCheckpoint
from ranktune.trainer.worker.spool import Spool
from tests.service.api import make_settings, spec
from tests.service.databases import migrate
from tests.service.seeding import adapter_archive
from tests.service.server import LiveServer

RANKTUNE = str(Path(sys.executable).parent / "ranktune")
TINY_PROXY = {"steps": 6, "lr": 0.001, "batch_size": 8, "seed": 0, "eval_every": 3}

pytestmark = pytest.mark.slow


def live_server(url: str) -> LiveServer:
    migrate(url)
    return LiveServer(create_app(make_settings(url, reap_interval_s=0.5, heartbeat_interval_s=0.5)))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(f"sqlite:///{tmp_path / 'e2e.db'}") as live:
        yield live


def api(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/api/v1", timeout=30)


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_stray_workers() -> Iterator[None]:
    """A test that fails or times out must not leave a worker training in the background."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def start_worker(
    server: LiveServer, tmp_path: Path, *args: str, device: str = "cpu"
) -> subprocess.Popen[str]:
    command = [
        RANKTUNE,
        "worker",
        "--server",
        server.url,
        "--device",
        device,
        "--spool",
        str(tmp_path / "spool"),
        *args,
    ]
    # One torch thread, as `ranktune demo` runs its workers: on two cores shared with this process's
    # server (and whatever else runs), a second OpenMP thread spin-waits for a busy core, and proxy
    # steps of a few milliseconds took seconds. Idle, one thread costs about a second per test.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    _started.append(process)
    return process


def submit(client: httpx.Client, **overrides: object) -> dict:
    body = spec(**{"strategy": "random", "max_trials": 2, "parallelism": 1, "proxy": TINY_PROXY, **overrides})
    response = client.post("/searches", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def trials(client: httpx.Client, search_id: int) -> list[dict]:
    return client.get(f"/searches/{search_id}/trials").json()["trials"]


def wait_until(condition, timeout_s: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_worker_runs_a_search_to_the_end(server: LiveServer, tmp_path: Path) -> None:
    with api(server) as client:
        search = submit(client)
        worker = start_worker(server, tmp_path, "--max-trials", "2", "--name", "cpu-worker")
        output, _ = worker.communicate(timeout=240)
        assert worker.returncode == 0, output
        finished = client.get(f"/searches/{search['id']}").json()
        assert finished["state"] == "finished" and finished["trials"]["succeeded"] == 2
        for trial in trials(client, search["id"]):
            assert 0.0 <= trial["objective"] <= 1.0 and trial["worker_name"] == "cpu-worker"
            assert [point["step"] for point in trial["curve"]] == [3, 6]
            assert trial["adapter_params"] == trial["exported_params"] == trial["parameter_count"]
        workers = client.get("/workers").json()["workers"]
        assert [w["name"] for w in workers] == ["cpu-worker"] and workers[0]["trials_done"] == 2
    assert not list((tmp_path / "spool").glob("*.json")), "every report was acknowledged"


@pytest.mark.gpu
def test_a_cuda_worker_runs_a_search_to_the_end(server: LiveServer, tmp_path: Path) -> None:
    with api(server) as client:
        search = submit(client, max_trials=3)
        worker = start_worker(server, tmp_path, "--max-trials", "3", "--name", "gpu-worker", device="cuda")
        output, _ = worker.communicate(timeout=240)
        assert worker.returncode == 0, output
        assert client.get(f"/searches/{search['id']}").json()["trials"]["succeeded"] == 3
        for trial in trials(client, search["id"]):
            assert 0.0 <= trial["objective"] <= 1.0 and trial["worker_name"] == "gpu-worker"
            assert trial["device"].startswith("cuda") and trial["peak_memory_bytes"] > 0
        workers = client.get("/workers").json()["workers"]
        assert [w["device"].startswith("cuda") for w in workers] == [True] and workers[0]["trials_done"] == 3


def test_the_importance_probe_trains_reports_and_steers_the_next_schedule(
    server: LiveServer, tmp_path: Path
) -> None:
    """The real worker runs the probe lease like any other (over-ranked, statistics at its end)."""
    with api(server) as client:
        search = submit(client, max_trials=3, probe={})
        worker = start_worker(server, tmp_path, "--max-trials", "3", "--name", "cpu-worker")
        output, _ = worker.communicate(timeout=240)
        assert worker.returncode == 0, output
        assert client.get(f"/searches/{search['id']}").json()["state"] == "finished"
        listed = client.get(f"/searches/{search['id']}/trials?include_schedule=true").json()["trials"]
        found = {t["number"]: t for t in listed}
        assert [found[n]["kind"] for n in range(3)] == ["proxy", "probe", "proxy"]
        assert all(t["state"] == "succeeded" for t in found.values())
    uniform, probe, allocated = (RankSchedule.from_json(found[n]["schedule"]) for n in range(3))
    assert set(probe.ranks) == {16} and set(uniform.ranks) == {8}
    assert allocated.ranks != uniform.ranks and len(set(allocated.ranks)) > 1  # steered by the probe
    assert 0.97 * uniform.parameter_count <= allocated.parameter_count <= uniform.parameter_count
    app: FastAPI = server.server.config.app
    with app.state.sessions() as session:
        stats = session.scalar(select(Trial.site_stats).where(Trial.id == found[1]["id"]))
    assert set(stats) == {s.name for s in probe.sites}  # every site reported, from the last step


def test_promotions_go_on_from_the_rung_below(server: LiveServer, tmp_path: Path) -> None:
    """Rungs of 3 and 9 steps: the worker uploads each rung-0 state, and the two promotions (the best
    schedule, then uniform) download theirs and train steps 4-9 only."""
    proxy = {k: v for k, v in TINY_PROXY.items() if k != "steps"}
    with api(server) as client:
        rungs = {"min_steps": 3, "max_steps": 9, "eta": 3}
        search = submit(client, max_trials=6, fidelity=rungs, proxy=proxy)
        worker = start_worker(server, tmp_path, "--max-trials", "6", "--name", "cpu-worker")
        output, _ = worker.communicate(timeout=240)
        assert worker.returncode == 0, output
        assert client.get(f"/searches/{search['id']}").json()["state"] == "finished"
        found = trials(client, search["id"])
    promoted = [t for t in found if t["rung"] == 1]
    assert len(promoted) == 2 and {t["config"] for t in promoted} >= {0}, found
    for trial in promoted:
        assert trial["state"] == "succeeded" and trial["resumed_from"] == 3, trial
        assert [point["step"] for point in trial["curve"]] == [6, 9]  # evaluated on its own steps only
    assert all(t["resumed_from"] is None and t["steps"] == 3 for t in found if t["rung"] == 0)
    assert "action=resume " in output and "resume_unavailable" not in output
    app: FastAPI = server.server.config.app
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(TrialCheckpoint)) == 0  # dropped at the end
    assert not list((tmp_path / "spool").glob("*.state")), "every state was uploaded"


def test_sigkilled_worker_trial_is_rerun_and_completed_once(server: LiveServer, tmp_path: Path) -> None:
    """On SQLite only: the worker talks HTTP, so the backend changes nothing on its side, and the
    server's side of a dead worker (expiry, requeue, attempt 2, the lease rows) runs on PostgreSQL in
    tests/service/test_leases.py and, against a killed server, in tests/e2e/test_crash_safety.py."""
    with api(server) as client:
        # 80 steps: the victim is killed within a heartbeat (0.5 s) of its first step, far from the
        # end; one evaluation at the end, as nothing here reads the curve.
        search = submit(
            client, max_trials=1, lease_ttl_s=5, proxy={**TINY_PROXY, "steps": 80, "eval_every": 0}
        )
        victim = start_worker(server, tmp_path, "--name", "victim")
        wait_until(lambda: (trials(client, search["id"])[0].get("step") or 0) > 0, what="training to start")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        # A fresh worker picks the trial up once the dead worker's lease expires.
        rescuer = start_worker(server, tmp_path, "--max-trials", "1", "--name", "rescuer")
        output, _ = rescuer.communicate(timeout=300)
        assert rescuer.returncode == 0, output
        [trial] = trials(client, search["id"])
        assert trial["state"] == "succeeded" and trial["attempt"] == 2 and trial["worker_name"] == "rescuer"
        assert client.get(f"/searches/{search['id']}").json()["state"] == "finished"
    app: FastAPI = server.server.config.app
    with app.state.sessions() as session:
        leases = session.execute(
            select(Lease.attempt, Lease.state).where(Lease.trial_id == trial["id"]).order_by(Lease.attempt)
        ).all()
    assert [tuple(lease) for lease in leases] == [(1, "expired"), (2, "completed")], "completed once"


def test_sigterm_hands_the_trial_back_and_exits_0(server: LiveServer, tmp_path: Path) -> None:
    with api(server) as client:
        search = submit(client, max_trials=1, proxy={**TINY_PROXY, "steps": 2000, "eval_every": 0})
        worker = start_worker(server, tmp_path, "--name", "preemptible")
        wait_until(lambda: (trials(client, search["id"])[0].get("step") or 0) > 0, what="training to start")
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0, output
        assert "preempt" in output
        [trial] = trials(client, search["id"])
        assert trial["state"] == "queued", "a preempted trial goes back to the queue"
        assert "preempted" in (trial["reason"] or "")


def test_spooled_result_is_resent_after_a_restart(server: LiveServer, tmp_path: Path) -> None:
    with api(server) as client:
        search = submit(client, max_trials=1)
        job = client.post(
            "/leases", json={"worker": {"name": "crashed", "device": "cpu", "hostname": "h"}}
        ).json()
        # The worker finished, spooled its report and died before sending it.
        body = {
            "attempt": job["attempt"],
            "metrics": {"accuracy": 0.75},
            "curve": [],
            "trainable_params": 10,
            "adapter_params": 10,
            "wall_time_s": 1.0,
            "peak_memory_bytes": 1,
            "device": "cpu",
            "timeline": [],
        }
        Spool(tmp_path / "spool").put(job["lease_id"], "complete", body)
        worker = start_worker(server, tmp_path, "--once", "--name", "restarted")
        output, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, output
        [trial] = trials(client, search["id"])
        assert trial["state"] == "succeeded" and trial["objective"] == 0.75
    assert not list((tmp_path / "spool").glob("*.json"))
    assert os.path.isdir(tmp_path / "spool")


def test_a_spooled_adapter_is_uploaded_before_its_report_after_a_restart(
    server: LiveServer, tmp_path: Path
) -> None:
    with api(server) as client:
        # One proxy trial (uniform), then its one confirmation run: the winner, whatever it scores.
        search = submit(client, max_trials=1, confirm={"top_k": 1, "steps": 4, "seeds": 1, "recheck": 0})
        worker_info = {"worker": {"name": "crashed", "device": "cpu", "hostname": "h"}}
        proxy = client.post("/leases", json=worker_info).json()
        done = client.post(f"/leases/{proxy['lease_id']}/complete",
                           json={"attempt": proxy["attempt"], "metrics": {"accuracy": 0.5}})  # fmt: skip
        assert done.status_code == 200, done.text
        job = client.post("/leases", json=worker_info).json()
        assert job["kind"] == "confirm" and job["upload_adapter"] is True
        # The worker finished the confirmation, spooled its adapter and report, and died.
        spool = Spool(tmp_path / "spool")
        archive = adapter_archive(job)
        spool.put_adapter(job["lease_id"], job["attempt"], archive)
        spool.put(job["lease_id"], "complete", {"attempt": job["attempt"], "metrics": {"accuracy": 0.6}})
        worker = start_worker(server, tmp_path, "--once", "--name", "restarted")
        output, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, output
        assert client.get(f"/searches/{search['id']}").json()["state"] == "finished"
        exported = client.get(f"/searches/{search['id']}/export/peft").json()
        assert exported["adapter"]["trial_id"] == job["trial_id"]
        assert client.get(f"/searches/{search['id']}/export/peft/adapter").content == archive
    assert not list((tmp_path / "spool").iterdir()), "adapter and report both acknowledged"


def test_a_result_the_server_refuses_becomes_a_failure_not_a_stuck_spool(
    server: LiveServer, tmp_path: Path
) -> None:
    with api(server) as client:
        search = submit(client, max_trials=1, max_attempts=1)
        job = client.post(
            "/leases", json={"worker": {"name": "crashed", "device": "cpu", "hostname": "h"}}
        ).json()
        nested: object = []
        for _ in range(40):  # deeper than the server accepts in a free-form field: a 422 at every resend
            nested = [nested]
        body = {
            "attempt": job["attempt"],
            "metrics": {"accuracy": 0.75},
            "curve": [],
            "trainable_params": 10,
            "adapter_params": 10,
            "wall_time_s": 1.0,
            "peak_memory_bytes": 1,
            "device": "cpu",
            "timeline": [nested],
        }
        Spool(tmp_path / "spool").put(job["lease_id"], "complete", body)
        worker = start_worker(server, tmp_path, "--once", "--name", "restarted")
        output, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, output
        [trial] = trials(client, search["id"])
        assert trial["state"] == "failed", trial
        assert "refused this trial's result" in trial["reason"] and "422" in trial["reason"]
    assert not list((tmp_path / "spool").glob("*.json")), "nothing is left to block the next start"
