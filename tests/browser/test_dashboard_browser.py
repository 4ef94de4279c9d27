"""The dashboard in a real browser: Debian's chromium, driven by the playwright package (no browser
download), against a live server on a fresh SQLite database seeded through the REST API."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from ranktune.service.app import create_app
from ranktune.service.db.repository.tokens import create_token
from tests.service.api import Api, make_settings
from tests.service.databases import SqliteDatabases
from tests.service.seeding import seed_confirmed_search
from tests.service.server import LiveServer
from tests.service.test_dashboard import (
    ACCURACY,
    FAIL_REASON,
    MALICIOUS,
    seed_finished_search,
    submit_malicious,
)

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = bool(os.environ.get("RANKTUNE_REQUIRE_BROWSER"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHELL_SCRIPTS = 5  # plotly.min.js, util.js, plots.js, detail.js, app.js


def missing() -> str | None:
    if sync_playwright is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


if missing() and not REQUIRED:
    pytestmark = pytest.mark.skip(reason=f"{missing()}; set RANKTUNE_REQUIRE_BROWSER=1 to fail instead")


@dataclass
class Site:
    url: str
    user_token: str
    worker_token: str
    search_id: int
    malicious_id: int
    trials: list[dict[str, Any]]


@dataclass
class Watch:
    """What the page did that it should not: dialogs, script errors, requests off the server."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    offsite: list[str] = field(default_factory=list)
    # Chromium logs every 4xx answer; 401 and 403 are the sign-in flow working as meant.
    expected: set[str] = field(default_factory=lambda: {"401 (Unauthorized)", "403 (Forbidden)"})

    def console(self, kind: str, text: str) -> None:
        prefix = "Failed to load resource: the server responded with a status of "
        if kind == "error" and not (text.startswith(prefix) and text[len(prefix) :] in self.expected):
            self.errors.append(text)

    def request(self, url: str, host: str) -> None:
        if urlsplit(url).netloc != host and not url.startswith(("blob:", "data:")):
            self.offsite.append(url)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with SqliteDatabases(tmp_path).fresh() as url:
        app = create_app(make_settings(url))
        with app.state.sessions() as session:
            user_token = create_token(session, "dashboard-user", "user")[1]
            worker_token = create_token(session, "dashboard-worker", "worker")[1]
        with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            user, worker = Api(client, token=user_token), Api(client, token=worker_token)
            search_id = seed_finished_search(user, worker, workers=("gpu-0", "<img src=x onerror=alert(2)>"))
            malicious_id = submit_malicious(user)
            yield Site(server.url, user_token, worker_token, search_id, malicious_id, user.trials(search_id))


@pytest.fixture
def browser() -> Iterator[Browser]:
    reason = missing()
    if reason:
        pytest.fail(f"RANKTUNE_REQUIRE_BROWSER is set but {reason}")
    assert sync_playwright is not None
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


def open_page(browser: Browser, site: Site, downloads: bool = False) -> tuple[Page, Watch]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=downloads)
    page = context.new_page()
    watch = Watch()
    page.on("dialog", lambda dialog: (watch.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    page.on("console", lambda msg: watch.console(msg.type, msg.text))
    host = urlsplit(site.url).netloc
    # Recorded rather than intercepted: the machine is offline anyway, the record proves the point.
    page.on("request", lambda request: watch.request(request.url, host))
    return page, watch


def plot_data(page: Page, div: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = page.evaluate(
        f"() => JSON.parse(JSON.stringify(document.getElementById('{div}').data || []))"
    )
    return data


def heatmap_z(page: Page) -> Any:
    return plot_data(page, "plot-heatmap")[0]["z"]


def sign_in(page: Page, token: str) -> None:
    page.fill("#token-input", token)
    page.click("#signin-form button[type=submit]")


def test_dashboard_in_chromium(browser: Browser, site: Site, tmp_path: Path) -> None:
    page, watch = open_page(browser, site, downloads=True)
    page.goto(site.url + "/")

    # Tokens exist, so the page asks for one; a worker token is refused with the server's message.
    page.wait_for_selector("#view-signin:not([hidden])")
    sign_in(page, site.worker_token)
    page.wait_for_function("() => document.getElementById('signin-error').textContent.includes('worker')")
    sign_in(page, site.user_token)
    page.wait_for_selector("#searches-table tbody tr >> nth=1")
    names = page.locator("#searches-table td.name a").all_text_contents()
    assert sorted(names) == sorted([MALICIOUS, "rank search"]), "the malicious name is literal text"
    assert page.locator("script").count() == SHELL_SCRIPTS, "no script element came from data"
    page.screenshot(path=str(tmp_path / "searches.png"), full_page=True)
    row = page.locator(f"#searches-table tr[data-search-id='{site.search_id}'] td")
    assert row.nth(2).text_content() == "finished"
    assert row.nth(5).text_content() == f"+{max(ACCURACY.values()) - ACCURACY[0]:.4f}", "gain over trial 0"

    # Search detail: one history point per finished trial.
    page.click(f"#searches-table a[href='#/searches/{site.search_id}']")
    page.wait_for_function("() => (document.getElementById('plot-heatmap').data || []).length > 0")
    finished = [t for t in site.trials if t["state"] in ("succeeded", "failed", "pruned", "cancelled")]
    history = plot_data(page, "plot-history")
    points = [x for trace in history if trace.get("meta") == "trials" for x in trace["x"]]
    assert sorted(points) == sorted(t["number"] for t in finished) and len(finished) == len(site.trials)
    failed = [trace for trace in history if trace.get("name") == "failed"]
    assert [tr["x"] for tr in failed] == [[3]], "the failed trial is marked on its own"
    assert page.locator("#trials-table").get_by_text(FAIL_REASON, exact=True).count() == 1
    assert plot_data(page, "plot-curves"), "learning curves of the default trials (uniform and best)"
    page.screenshot(path=str(tmp_path / "search-best.png"), full_page=True)

    # Clicking a trial (a table row, then a point of the plot) changes the heatmap.
    best_z = heatmap_z(page)
    page.click("#trials-table tbody tr[data-number='0']")
    page.wait_for_function("() => document.getElementById('heatmap-title').textContent.includes('trial #0')")
    uniform_z = heatmap_z(page)
    assert uniform_z != best_z, "the uniform baseline's schedule differs from the best one"
    page.locator("#plot-history").scroll_into_view_if_needed()  # the row click scrolled to the table
    target = next(t for t in site.trials if t["state"] == "succeeded" and t["number"] not in (0, 5))
    box = page.evaluate(
        """(number) => {
            const gd = document.getElementById('plot-history');
            const trace = gd.data.findIndex((t) => t.meta === 'trials' && t.x.includes(number));
            const point = gd.data[trace].x.indexOf(number);
            const layer = gd.querySelectorAll('.scatterlayer .trace')[trace];
            const r = layer.querySelectorAll('.points path')[point].getBoundingClientRect();
            return {x: r.x + r.width / 2, y: r.y + r.height / 2};
        }""",
        target["number"],
    )
    page.mouse.move(box["x"], box["y"])  # plotly clicks the point it hovers: hover first
    page.wait_for_selector("#plot-history .hoverlayer .hovertext")
    page.mouse.click(box["x"], box["y"])
    page.wait_for_function(
        f"() => document.getElementById('heatmap-title').textContent.includes('trial #{target['number']}')"
    )
    assert heatmap_z(page) != uniform_z
    page.screenshot(path=str(tmp_path / "search-clicked.png"), full_page=True)

    # The table sorts by a column: ascending, then descending on a second click.
    page.click("#trials-table th[data-key='objective']")
    page.click("#trials-table th[data-key='objective']")
    first = page.locator("#trials-table tbody tr").first.get_attribute("data-number")
    assert first == str(max(ACCURACY, key=lambda number: ACCURACY[number]))

    # The PEFT config downloads as a JSON file.
    with page.expect_download() as download:
        page.click("#download-peft")
    config = json.loads(Path(download.value.path()).read_text())
    assert "rank_pattern" in config and download.value.suggested_filename.endswith(".json")

    # The malicious search's page and the workers page show names as text.
    page.goto(f"{site.url}/#/searches/{site.malicious_id}")
    shown = f"() => document.getElementById('search-name').textContent === {json.dumps(MALICIOUS)}"
    page.wait_for_function(shown)
    watch.expected.add("404 (Not Found)")
    page.goto(f"{site.url}/#/searches/999")
    page.wait_for_function("() => document.getElementById('search-error').textContent.includes('999')")
    page.goto(site.url + "/#/workers")
    page.wait_for_selector("#workers-table tbody tr >> nth=1")
    workers = page.locator("#workers-table td.name").all_text_contents()
    assert "<img src=x onerror=alert(2)>" in workers
    page.screenshot(path=str(tmp_path / "workers.png"), full_page=True)

    assert page.locator("script").count() == SHELL_SCRIPTS and page.locator("img").count() == 0
    assert watch.dialogs == [], "a name ran as script"
    assert watch.errors == [], "the page logged errors (a CSP violation shows here too)"
    assert watch.offsite == [], "the page tried to reach the network"


def test_live_updates_and_open_mode(tmp_path: Path, browser: Browser) -> None:
    """With no token on a loopback server there is no sign-in; new trials appear without a reload."""
    with SqliteDatabases(tmp_path).fresh() as url:
        app = create_app(make_settings(url))
        with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            api = Api(client)
            search = api.submit(name="live", max_trials=3, parallelism=1)
            site = Site(server.url, "", "", search["id"], 0, [])
            page, watch = open_page(browser, site)
            page.goto(f"{server.url}/#/searches/{search['id']}")
            page.wait_for_selector("#trials-table tbody tr")
            assert page.is_hidden("#view-signin") and "open mode" in (page.text_content("#mode") or "")
            job = api.claim()
            assert job is not None and api.complete(job, accuracy=0.61).status_code == 200
            page.wait_for_function(
                "() => (document.getElementById('plot-history').data || []).some((t) => t.meta === 'trials')",
                timeout=10_000,
            )
            metric = page.locator("#trials-table tbody tr[data-number='0'] td").nth(9)
            assert metric.text_content() == "0.6100"
            page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
            assert watch.dialogs == [] and watch.errors == [] and watch.offsite == []
            page.context.close()


def test_dashboard_shows_the_confirmed_gain_with_its_interval(browser: Browser, site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=30) as client:
        user, worker = Api(client, token=site.user_token), Api(client, token=site.worker_token)
        search_id = seed_confirmed_search(user, worker)
        result = user.search(search_id)["result"]
        paired = result["paired"]
        trials = [t for t in user.trials(search_id) if t["exported_params"] < t["adapter_params"]]
    assert paired["verdict"] == "significant gain", result
    page, watch = open_page(browser, site)
    page.goto(f"{site.url}/#/searches/{search_id}")
    sign_in(page, site.user_token)
    page.wait_for_selector("#results:not([hidden])")
    text = page.text_content("#results-gain") or ""
    low, high = (f"+{v:.4f}" for v in paired["ci"])
    assert text == (
        f"Gain over uniform: +{paired['gain']:.4f} (95% CI {low} to {high}, "
        "paired over 2 seeds × 3,000 examples): significant gain"
    )
    assert "95% CI" in (page.text_content("#search-facts") or "")
    assert len(trials) == 2, "the confirmed schedule's two runs"
    written = page.locator(".exported-params").all_text_contents()
    assert written == [f"{t['exported_params']:,} written" for t in trials]
    assert not watch.errors and not watch.dialogs and not watch.offsite


def test_dashboard_shows_each_trials_rung(browser: Browser, site: Site) -> None:
    fidelity = {"min_steps": 20, "max_steps": 180, "eta": 3}
    with httpx.Client(base_url=site.url, timeout=30) as client:
        user, worker = Api(client, token=site.user_token), Api(client, token=site.worker_token)
        search_id = user.submit(name="rungs", strategy="random", max_trials=8, parallelism=1,
                                fidelity=fidelity, proxy={"lr": 0.001})["id"]  # fmt: skip
        while (job := worker.claim()) is not None:  # any scores: ASHA promotes once 3 finished a rung
            score = 0.5 + job["trial_number"] % 7 / 100 + job["proxy"]["steps"] / 1_000
            resumed = {"resumed_from": job["proxy"]["steps"] // 3} if job["trial_number"] % 2 else {}
            assert worker.complete(job, score, **resumed).status_code == 200
        trials = user.trials(search_id)
    promoted = [t for t in trials if t["rung"] > 0 and t["config"] != 0]
    assert promoted, trials
    shown = kind_column(browser, site, search_id, trials)
    for t in trials:
        expected = f"rung {t['rung']} · {t['steps']} steps" + (f" of #{t['config']}" if t["rung"] else "")
        if t["resumed_from"] is not None:
            expected += f" (from step {t['resumed_from']})"
        assert shown[t["number"]] == expected
    assert any(t["resumed_from"] for t in trials)


def kind_column(browser: Browser, site: Site, search_id: int, trials: list[dict[str, Any]]) -> dict[int, str]:
    """The trials table's kind column on the search's page, by trial number (no page errors)."""
    page, watch = open_page(browser, site)
    page.goto(f"{site.url}/#/searches/{search_id}")
    sign_in(page, site.user_token)
    page.wait_for_selector(f"#trials-table tr[data-number='{trials[-1]['number']}']")
    row = "#trials-table tr[data-number='{}'] td"
    shown = {t["number"]: page.locator(row.format(t["number"])).nth(2).text_content() or "" for t in trials}
    assert not watch.errors and not watch.dialogs and not watch.offsite
    return shown


def test_dashboard_marks_rechecks(browser: Browser, site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=30) as client:
        user, worker = Api(client, token=site.user_token), Api(client, token=site.worker_token)
        confirm = {"top_k": 1, "steps": 30, "seeds": 1, "recheck": 2}
        search_id = user.submit(name="rechecks", strategy="random", max_trials=3, parallelism=1,
                                confirm=confirm)["id"]  # fmt: skip
        while (job := worker.claim()) is not None:
            assert worker.complete(job, 0.5 + job["trial_number"] / 100).status_code == 200
        trials = user.trials(search_id)
    rechecks = [t for t in trials if t["kind"] == "proxy" and t["number"] >= 3]
    assert [t["config"] for t in rechecks] == [2, 1], "the two best proxies, best first"
    shown = kind_column(browser, site, search_id, trials)
    for t in trials:
        expected = {"confirm": f"confirm of #{t['confirms']}", "proxy": "proxy"}[t["kind"]]
        if t in rechecks:
            expected = f"recheck of #{t['config']}"
        assert shown[t["number"]] == expected
