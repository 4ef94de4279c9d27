// ranktune dashboard: sign-in, routing (#/searches, #/searches/ID, #/workers), lists, polling.
"use strict";

(function (RT) {
  const { el, clear, isNum } = RT;
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 3000;
  const VIEWS = ["view-signin", "view-searches", "view-search", "view-workers"];

  const app = {
    busy: false,
    again: false,
    signingIn: false,
    summaries: new Map(), // search id → {sig, best, baseline, baselineFinal}
  };

  function route() {
    const hash = window.location.hash || "#/searches";
    const search = /^#\/searches\/(\d+)$/.exec(hash);
    if (search) return { view: "search", id: Number(search[1]) };
    if (hash === "#/workers") return { view: "workers" };
    return { view: "searches" };
  }

  function show(viewId) {
    for (const id of VIEWS) $(id).hidden = id !== viewId;
    const current = route().view;
    $("nav-searches").classList.toggle("active", viewId !== "view-signin" && current !== "workers");
    $("nav-workers").classList.toggle("active", viewId !== "view-signin" && current === "workers");
  }

  function setStatus(text, isError) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function showSignIn(message) {
    app.signingIn = true;
    show("view-signin");
    $("signin-error").textContent = message || "";
    $("sign-out").hidden = !RT.token();
    $("mode").textContent = "";
    setStatus("");
    $("token-input").focus();
  }

  /** Errors of a refresh or a click: auth problems open the sign-in form, the rest go to the bar. */
  function reportError(error) {
    if (error instanceof RT.AuthError) {
      showSignIn(error.message);
    } else {
      setStatus("error: " + (error && error.message ? error.message : String(error)), true);
    }
  }

  // ---- searches -------------------------------------------------------------------------------

  function doneOf(counts) {
    return (counts.succeeded || 0) + (counts.failed || 0) + (counts.pruned || 0) + (counts.cancelled || 0);
  }

  /** Best objective and trial 0's (the uniform baseline), fetched only when a search's counts move. */
  async function summarize(search) {
    const sig = JSON.stringify([search.state, search.trials, search.best_trial_id]);
    const known = app.summaries.get(search.id) || { sig: null, best: null, baseline: null, baselineFinal: false };
    if (known.sig === sig) return known;
    const next = Object.assign({}, known, { sig });
    const counts = search.trials || {};
    const jobs = [];
    if (!("best_objective" in search) && (counts.succeeded || 0) > 0) {
      jobs.push(RT.api("/searches/" + search.id + "/best").then(
        (best) => { next.best = best.trial ? best.trial.objective : null; },
        (e) => { if (e instanceof RT.AuthError) throw e; },
      ));
    }
    const confirmed = search.result && isNum(search.result.gain);
    if (!confirmed && !known.baselineFinal && doneOf(counts) > 0) {
      jobs.push(RT.api("/searches/" + search.id + "/trials?limit=1").then((list) => {
        const first = list.trials && list.trials[0];
        if (first && first.number === 0) {
          next.baseline = first.state === "succeeded" ? first.objective : null;
          next.baselineFinal = RT.TERMINAL.has(first.state);
        }
      }));
    }
    await Promise.all(jobs);
    app.summaries.set(search.id, next);
    return next;
  }

  function searchRow(search, summary) {
    const counts = search.trials || {};
    const done = doneOf(counts);
    const total = Math.max(search.max_trials || 0, done + (counts.queued || 0) + (counts.running || 0));
    const best = "best_objective" in search ? search.best_objective : summary.best;
    let gain = null;
    let how = "";
    if (search.result && isNum(search.result.gain)) {
      gain = search.result.gain;
      how = "confirmed over seeds";
    } else {
      // best_objective is the proxy best until a confirmation result exists.
      gain = RT.gainOf(best, summary.baseline, RT.directionOf(search));
      how = "proxy best vs trial 0";
    }
    const link = el("a", { text: search.name, attrs: { href: "#/searches/" + search.id } });
    const progress = done + "/" + total + (counts.running ? " · " + counts.running + " running" : "");
    return el("tr", { attrs: { "data-search-id": search.id } }, [
      el("td", { className: "num", text: search.id }),
      el("td", { className: "name" }, [link]),
      el("td", {}, [RT.stateBadge(search.state, search.reason)]),
      el("td", { className: "num", text: progress }),
      el("td", { className: "num", text: RT.fmtMetric(best), title: RT.metricOf(search) + ", " + RT.directionOf(search) }),
      el("td", { className: "num " + (isNum(gain) ? (gain >= 0 ? "gain-pos" : "gain-neg") : ""), text: RT.fmtSigned(gain), title: isNum(gain) ? how : "" }),
      el("td", { text: RT.fmtTime(search.created_at) }),
      el("td", { className: "num", text: counts.running || 0 }),
    ]);
  }

  async function loadSearches() {
    const list = await RT.api("/searches?limit=200");
    const searches = (list && list.searches) || [];
    const summaries = await Promise.all(searches.map(summarize));
    if (route().view !== "searches") return;
    const body = clear($("searches-table").tBodies[0]);
    searches.forEach((search, i) => body.append(searchRow(search, summaries[i])));
    $("searches-empty").hidden = searches.length > 0;
    $("searches-table").hidden = searches.length === 0;
  }

  // ---- workers --------------------------------------------------------------------------------

  async function loadWorkers() {
    const list = await RT.api("/workers");
    const workers = (list && list.workers) || [];
    if (route().view !== "workers") return;
    const body = clear($("workers-table").tBodies[0]);
    for (const w of workers) {
      body.append(el("tr", {}, [
        el("td", { className: "name", text: w.name }),
        el("td", { text: w.device }),
        el("td", { text: w.hostname }),
        el("td", { text: isNum(w.current_trial_id) ? "trial id " + w.current_trial_id : "idle" }),
        el("td", { text: RT.fmtAgo(w.last_seen), title: RT.fmtTime(w.last_seen) }),
        el("td", { className: "num", text: RT.fmtInt(w.trials_done) }),
      ]));
    }
    $("workers-empty").hidden = workers.length > 0;
    $("workers-table").hidden = workers.length === 0;
  }

  // ---- refresh loop ---------------------------------------------------------------------------

  async function refresh() {
    if (app.busy) {
      app.again = true;
      return;
    }
    app.busy = true;
    try {
      const current = route();
      if (current.view === "search") await RT.detail.load(current.id);
      else if (current.view === "workers") await loadWorkers();
      else await loadSearches();
      app.signingIn = false;
      const appearing = $("view-" + current.view).hidden;
      show("view-" + current.view);
      if (appearing && current.view === "search") RT.detail.resize();
      const open = !RT.token();
      $("mode").textContent = open ? "open mode: this server needs no token" : "";
      $("sign-out").hidden = open;
      setStatus("updated " + new Date().toLocaleTimeString());
    } catch (e) {
      reportError(e);
    } finally {
      app.busy = false;
      if (app.again) {
        app.again = false;
        refresh();
      }
    }
  }

  function tick() {
    if (app.signingIn || document.hidden) return;
    refresh();
  }

  function start() {
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      RT.setToken(value);
      $("token-input").value = "";
      app.signingIn = false;
      refresh();
    });
    $("sign-out").addEventListener("click", () => {
      RT.setToken(null);
      app.summaries.clear();
      refresh();
    });
    window.addEventListener("hashchange", refresh);
    RT.detail.bind();
    refresh();
    window.setInterval(tick, POLL_MS);
  }

  RT.reportError = reportError;
  RT.refresh = refresh;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(window.RT);
