"""Proposal work per request is bounded, and queues still fill (SQLite and PostgreSQL): a submission
proposes a few trials, the queue filler the rest in bounded ticks, a claim that finds nothing queued
proposes one, and fills running at once in several API processes never propose a trial twice."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ranktune.service.app import create_app
from ranktune.service.db import leases
from ranktune.service.db.models import Search, Trial
from ranktune.service.db.repository import refill
from ranktune.service.db.repository.searches import SUBMIT_PROPOSALS
from ranktune.service.db.repository.trials import top_up
from ranktune.service.db.types import utcnow
from ranktune.service.queue_filler import TICK_S, fill_once
from ranktune.service.schemas.leases import WorkerInfo
from ranktune.service.settings import Settings
from tests.service.api import Api


def numbers(api: Api, search_id: int) -> list[int]:
    with api.session() as session:
        return list(session.scalars(select(Trial.number).where(Trial.search_id == search_id)))


def test_a_1024_parallel_tpe_search_is_created_in_seconds_and_serves_claims(api: Api) -> None:
    api.submit(name="warm-up", max_trials=1, parallelism=1)  # the first submission imports torch
    started = time.perf_counter()
    search = api.submit(name="big", strategy="tpe", max_trials=10_000, parallelism=1024)
    assert time.perf_counter() - started < 3.0
    assert search["trials"]["queued"] == SUBMIT_PROPOSALS
    jobs = [api.claim(f"w{i}") for i in range(SUBMIT_PROPOSALS + 4)]  # 4 more than were queued
    assert all(job is not None and job["search_id"] == search["id"] for job in jobs[1:])
    assert api.app is not None
    started = time.perf_counter()
    queued = fill_once(api.app)
    assert queued > 0 and time.perf_counter() - started < TICK_S + 2.0, "a tick is bounded"
    counts = api.search(search["id"])["trials"]
    assert counts["running"] == SUBMIT_PROPOSALS + 3 and counts["queued"] == queued
    assert sorted(numbers(api, search["id"])) == list(range(SUBMIT_PROPOSALS + 3 + queued))


def test_claims_propose_when_nothing_is_queued_and_parallelism_holds(api: Api) -> None:
    parallelism = SUBMIT_PROPOSALS + 4
    search = api.submit(max_trials=100, parallelism=parallelism)
    assert search["trials"]["queued"] == SUBMIT_PROPOSALS
    jobs = [api.claim(f"w{i}") for i in range(parallelism)]
    assert all(job is not None for job in jobs)
    assert api.claim() is None, "parallelism reached: nothing to propose"
    assert api.search(search["id"])["trials"]["running"] == parallelism
    assert api.complete(jobs[0]).status_code == 200  # a result proposes the trial for its slot
    assert api.search(search["id"])["trials"]["queued"] == 1


def test_the_server_fills_queues_in_the_background(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"top_up_interval_s": 0.05}))
    with TestClient(app) as client:
        api = Api(client, app)
        search = api.submit(max_trials=100, parallelism=48)
        deadline = time.monotonic() + 10
        while api.search(search["id"])["trials"]["queued"] < 48:
            assert time.monotonic() < deadline, "the queue filler did not fill the queue"
            time.sleep(0.05)
        assert sorted(numbers(api, search["id"])) == list(range(48))


def test_fills_in_several_processes_never_propose_a_trial_twice(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Two apps (each its own engine, pool and SQLite writer lock, as two API processes have), two
    threads each, run filler ticks and claims at once."""
    apps = [create_app(settings) for _ in range(2)]
    claimed: list[int] = []

    def work(index: int) -> None:
        app = apps[index % 2]
        worker = WorkerInfo(name=f"w{index}", device="cpu", hostname="h")
        for _ in range(3):
            fill_once(app, tick_s=0.2, slice_s=0.01)
            with app.state.sessions() as session:
                job = leases.claim(session, worker, 5.0, utcnow())
            if job is not None:
                claimed.append(job.trial_id)

    try:
        with TestClient(apps[0]) as client:
            api = Api(client, apps[0])
            search = api.submit(max_trials=300, parallelism=120)
            with caplog.at_level(logging.ERROR, logger="ranktune"):
                threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(timeout=60)
            assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            found = numbers(api, search["id"])
            assert sorted(found) == list(range(len(found))) and len(found) <= 120
            assert len(claimed) == 12 and len(set(claimed)) == 12
            counts = api.search(search["id"])["trials"]
            assert counts["queued"] + counts["running"] == len(found) and counts["running"] == 12
            fill_once(apps[0])
            assert api.search(search["id"])["trials"]["queued"] == 120 - 12
    finally:
        apps[1].state.engine.dispose()


@pytest.mark.parametrize("holder_commits", [True, False])
def test_a_claim_waits_for_a_search_another_claim_is_proposing_for(
    api: Api, backend: str, holder_commits: bool
) -> None:
    """PostgreSQL: with nothing queued and the only search's row held by another transaction that
    is proposing, a claim waits for it (up to ``CLAIM_LOCK_WAIT_MS``) and gets work instead of a 204
    that idles its worker; if the holder outlasts the wait, the claim answers 204 promptly."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: no claim ever finds a search busy")
    search = api.submit(max_trials=100, parallelism=SUBMIT_PROPOSALS + 2)
    for i in range(SUBMIT_PROPOSALS):
        assert api.claim(f"w{i}") is not None
    assert api.search(search["id"])["trials"]["queued"] == 0
    assert api.app is not None
    hold_s = 0.2 if holder_commits else refill.CLAIM_LOCK_WAIT_MS / 1000 + 1.0
    holding = threading.Event()

    def hold_and_propose() -> None:  # what another process's claim or result does
        with api.app.state.sessions() as session:  # type: ignore[union-attr]
            session.begin()
            locked = session.scalars(select(Search).where(Search.id == search["id"]).with_for_update())
            row = locked.one()
            holding.set()
            time.sleep(hold_s)
            top_up(session, row, utcnow(), limit=1)
            session.commit()

    holder = threading.Thread(target=hold_and_propose)
    holder.start()
    assert holding.wait(10)
    worker = WorkerInfo(name="waiting", device="cpu", hostname="h")
    started = time.perf_counter()
    with api.app.state.sessions() as session:
        job = leases.claim(session, worker, 5.0, utcnow())
    waited = time.perf_counter() - started
    holder.join(timeout=30)
    if holder_commits:
        assert job is not None and job.search_id == search["id"]
        assert waited >= hold_s * 0.5, "it waited for the holder"
    else:
        assert job is None, "the holder outlasted the wait: 204"
        assert waited < hold_s, "it did not wait for the holder to finish"
    counts = api.search(search["id"])["trials"]
    assert counts["queued"] + counts["running"] <= SUBMIT_PROPOSALS + 2
    assert sorted(numbers(api, search["id"])) == list(range(len(numbers(api, search["id"]))))


def _hold_search_row(api: Api, search_id: int, hold_s: float) -> tuple[threading.Thread, threading.Event]:
    """Another transaction (another process's fill or result) holding the search row for ``hold_s``."""
    holding = threading.Event()

    def hold() -> None:
        with api.app.state.sessions() as session:  # type: ignore[union-attr]
            session.begin()
            session.scalars(select(Search).where(Search.id == search_id).with_for_update()).one()
            holding.set()
            time.sleep(hold_s)
            session.rollback()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    return holder, holding


def test_a_result_is_stored_while_its_search_row_is_held_and_the_filler_ends_the_search(
    api: Api, backend: str
) -> None:
    """PostgreSQL: a result locks its trial and lease, not the search row (64 workers of one search
    queued on it), so it is stored at once while another transaction holds the row; the freed slot's
    proposal waits at most ``RESULT_LOCK_WAIT_MS`` and is then left to the queue filler, which also ends
    a search whose last result found the row busy."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: no result ever finds a search busy")
    search = api.submit(max_trials=1, parallelism=1)
    job = api.claim()
    assert job is not None
    hold_s = refill.RESULT_LOCK_WAIT_MS / 1000 + 1.5
    holder, _ = _hold_search_row(api, search["id"], hold_s)
    started = time.perf_counter()
    answer = api.complete(job)
    waited = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    assert waited < hold_s - 0.5, "the result waited for the search row"
    with api.session() as session:  # stored, though the search could not be finished meanwhile
        trial = session.get(Trial, job["trial_id"])
        assert trial is not None and trial.state == "succeeded" and trial.objective is not None
    assert api.search(search["id"])["state"] == "running"
    holder.join(timeout=30)
    assert api.app is not None
    fill_once(api.app)  # nothing queued or running: the filler's turn to end it
    assert api.search(search["id"])["state"] == "finished"


def test_a_result_proposes_for_its_slot_when_the_row_frees_within_the_wait(api: Api, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: no result ever finds a search busy")
    search = api.submit(max_trials=100, parallelism=SUBMIT_PROPOSALS)
    jobs = [api.claim(f"w{i}") for i in range(SUBMIT_PROPOSALS)]
    assert all(job is not None for job in jobs)
    holder, _ = _hold_search_row(api, search["id"], refill.RESULT_LOCK_WAIT_MS / 1000 / 4)
    assert api.complete(jobs[0]).status_code == 200
    holder.join(timeout=30)
    assert api.search(search["id"])["trials"]["queued"] == 1, "the slot's trial was proposed"
