// ranktune dashboard: one search — history, schedule heatmap, model fit, curves, trials, results.
"use strict";

window.RT = window.RT || {};

(function (RT) {
  const { el, clear, isNum } = RT;
  const $ = (id) => document.getElementById(id);
  const PLOT_CONFIG = { responsive: true, displaylogo: false };

  const view = {
    id: null,
    search: null,
    trials: [],
    schedules: new Map(), // trial id → {schedule, terminal}
    selected: null, // trial number whose schedule the heatmap shows (null: the best)
    curves: new Set(), // trial numbers whose learning curves are drawn
    curvesTouched: false,
    sort: { key: "number", dir: 1 },
    bound: new Set(), // plot divs with a click handler
    heatmapKey: null,
    missing: false, // the last load found no such search
  };

  function reset(id) {
    Object.assign(view, {
      id, search: null, trials: [], schedules: new Map(), selected: null, curves: new Set(),
      curvesTouched: false, heatmapKey: null, missing: false,
    });
    clear($("trials-table").tBodies[0]);
    clear($("search-facts"));
    $("search-state").textContent = "";
    $("search-state").className = "state";
    for (const hide of ["results", "search-reason", "search-error"]) $(hide).hidden = true;
    $("download-peft").disabled = true;
    for (const plot of ["plot-history", "plot-heatmap", "plot-model", "plot-curves"]) {
      if (window.Plotly) window.Plotly.purge($(plot));
      view.bound.delete(plot);
    }
    $("search-name").textContent = "Search " + id;
  }

  function draw(id, figure, note, emptyText) {
    const div = $(id);
    const noteEl = note ? $(note) : null;
    if (!window.Plotly) {
      if (noteEl) { noteEl.hidden = false; noteEl.textContent = "plotly.js did not load: plots are unavailable."; }
      return;
    }
    if (!figure) {
      window.Plotly.purge(div);
      view.bound.delete(id);
      div.style.height = "0";
      if (noteEl) { noteEl.hidden = false; noteEl.textContent = emptyText; }
      return;
    }
    if (noteEl) noteEl.hidden = true;
    div.style.height = (figure.height || 380) + "px";
    window.Plotly.react(div, figure.data, figure.layout, PLOT_CONFIG);
    if (!view.bound.has(id)) {
      // Points carry their trial number as customdata: a click shows that trial's schedule.
      div.on("plotly_click", (event) => {
        const point = event && event.points && event.points[0];
        if (point && isNum(point.customdata)) select(point.customdata);
      });
      view.bound.add(id);
    }
  }

  function byNumber(number) {
    return view.trials.find((t) => t.number === number) || null;
  }

  /** The best trial: the one the server names, else the best succeeded proxy trial so far. */
  function bestTrial() {
    const search = view.search;
    if (search && search.best_trial_id !== null && search.best_trial_id !== undefined) {
      const named = view.trials.find((t) => t.id === search.best_trial_id);
      if (named) return named;
    }
    const maximize = RT.directionOf(search) !== "minimize";
    let best = null;
    for (const t of view.trials) {
      if (t.state !== "succeeded" || t.kind === "confirm" || !isNum(t.objective)) continue;
      if (best === null || (maximize ? t.objective > best.objective : t.objective < best.objective)) best = t;
    }
    return best;
  }

  function uniformTrial() {
    const t = byNumber(0);
    return t && t.state === "succeeded" && isNum(t.objective) ? t : null;
  }

  function proxyBest() {
    const best = bestTrial();
    return best && best.kind !== "confirm" ? best.objective : null;
  }

  /** The last re-allocation in a trial's timeline (the schedule it ended with), if any. */
  function reallocated(trial) {
    const events = Array.isArray(trial.timeline) ? trial.timeline : [];
    for (let i = events.length - 1; i >= 0; i--) {
      const event = events[i];
      if (event && typeof event === "object" && event.schedule && Array.isArray(event.schedule.sites)) return event;
    }
    return null;
  }

  async function ensureSchedule(trial) {
    if (reallocated(trial)) return null; // the timeline already carries the schedule it ended with
    const cached = view.schedules.get(trial.id);
    if (cached && cached.terminal) return cached;
    const path = "/searches/" + view.id + "/trials?include_schedule=true";
    // Numbers are dense and trials come ordered by number, so offset = number finds one trial.
    let found = (await RT.api(path + "&limit=1&offset=" + trial.number)).trials || [];
    if (!found.length || found[0].id !== trial.id) found = (await RT.api(path + "&limit=10000")).trials || [];
    for (const t of found) {
      if (t.schedule) view.schedules.set(t.id, { schedule: t.schedule, terminal: RT.TERMINAL.has(t.state), at: Date.now() });
    }
    return view.schedules.get(trial.id) || null;
  }

  async function load(id) {
    if (view.id !== id) reset(id);
    let search, list;
    try {
      [search, list] = await Promise.all([
        RT.api("/searches/" + id),
        RT.api("/searches/" + id + "/trials?limit=10000"),
      ]);
    } catch (e) {
      if (!(e instanceof RT.ApiError) || e.status !== 404) throw e;
      view.search = null;
      view.missing = true;
      $("search-error").hidden = false;
      $("search-error").textContent = e.message;
      return;
    }
    if (view.id !== id) return; // the user moved on while this was loading
    if (view.missing) $("search-error").hidden = true; // it exists now; a download error stays
    view.missing = false;
    view.search = search;
    view.trials = (list && list.trials) || [];
    const shown = shownTrial();
    if (shown) await ensureSchedule(shown);
    render();
  }

  function shownTrial() {
    return (view.selected !== null && byNumber(view.selected)) || bestTrial();
  }

  async function select(number) {
    view.selected = number;
    const trial = byNumber(number);
    try {
      if (trial) await ensureSchedule(trial);
    } catch (e) {
      RT.reportError(e);
      return;
    }
    renderHeatmap();
    renderHistory();
    renderTable();
  }

  function render() {
    renderHeader();
    renderResults();
    renderHistory();
    renderHeatmap();
    renderModel();
    renderCurves();
    renderTable();
  }

  function fact(name, value) {
    return el("div", {}, [el("dt", { text: name }), el("dd", { text: value })]);
  }

  function gain() {
    const search = view.search;
    if (search.result && isNum(search.result.gain)) return { value: search.result.gain, how: "confirmed" };
    const uniform = uniformTrial();
    const value = uniform ? RT.gainOf(proxyBest(), uniform.objective, RT.directionOf(search)) : null;
    return { value, how: "proxy, vs trial 0" };
  }

  function renderHeader() {
    const s = view.search;
    const counts = s.trials || {};
    $("search-name").textContent = s.name;
    const state = $("search-state");
    state.className = "state state-" + s.state;
    state.textContent = s.state;
    const done = (counts.succeeded || 0) + (counts.failed || 0) + (counts.pruned || 0) + (counts.cancelled || 0);
    const total = Math.max(s.max_trials || 0, done + (counts.queued || 0) + (counts.running || 0));
    const best = "best_objective" in s ? s.best_objective : proxyBest();
    const g = gain();
    const budget = RT.fmtInt(s.budget_params) + " params" + (isNum(s.budget_rank) ? " (uniform rank " + s.budget_rank + ")" : "");
    const facts = clear($("search-facts"));
    for (const [name, value] of [
      ["model", s.model], ["task", s.task], ["strategy", s.strategy], ["budget", budget],
      ["progress", done + "/" + total + " done, " + (counts.running || 0) + " running, " + (counts.queued || 0) + " queued"],
      ["failed / pruned", (counts.failed || 0) + " / " + (counts.pruned || 0)],
      ["best " + RT.metricOf(s), RT.fmtMetric(best) + " (" + RT.directionOf(s) + ")"],
      ["gain over uniform", s.result && s.result.paired ? RT.fmtPaired(s.result.paired)
        : isNum(g.value) ? RT.fmtSigned(g.value) + " (" + g.how + ")" : "—"],
      ["started", RT.fmtTime(s.created_at)], ["finished", RT.fmtTime(s.finished_at)],
    ]) facts.append(fact(name, value));
    const reason = $("search-reason");
    reason.hidden = !s.reason;
    reason.textContent = s.reason || "";
    $("download-peft").disabled = !((counts.succeeded || 0) > 0);
  }

  function resultRow(label, r) {
    if (!r) return null;
    const objectives = Array.isArray(r.objectives) ? r.objectives.map(RT.fmtMetric).join(", ") : "—";
    return el("tr", {}, [
      el("td", { text: label }),
      el("td", { className: "num", text: isNum(r.trial_number) ? "#" + r.trial_number : "—" }),
      el("td", { className: "num", text: RT.fmtMetric(r.mean) + " ± " + RT.fmtMetric(r.std) }),
      el("td", { className: "num", text: isNum(r.seeds) ? r.seeds : "—" }),
      el("td", { text: objectives }),
    ]);
  }

  function renderResults() {
    const result = view.search.result;
    const card = $("results");
    card.hidden = !result;
    if (!result) return;
    $("results-gain").textContent = result.paired
      ? "Gain over uniform: " + RT.fmtPaired(result.paired)
      : "Gain over uniform: " + RT.fmtSigned(result.gain) + " (winner's mean minus the uniform baseline's, same seeds)";
    const body = clear($("results-table").tBodies[0]);
    const rows = [resultRow("winner", result.winner), resultRow("uniform", result.uniform)];
    for (const r of Array.isArray(result.confirmed) ? result.confirmed : []) {
      const isWinner = result.winner && r.trial_number === result.winner.trial_number;
      const isUniform = result.uniform && r.trial_number === result.uniform.trial_number;
      if (!isWinner && !isUniform) rows.push(resultRow("confirmed", r));
    }
    for (const row of rows) if (row) body.append(row);
  }

  function renderHistory() {
    const shown = shownTrial();
    const figure = RT.historyFigure(view.trials, RT.directionOf(view.search), RT.metricOf(view.search), shown ? shown.number : null);
    draw("plot-history", figure.data.length ? figure : null, "history-note", "No trial has finished yet.");
  }

  function renderHeatmap() {
    const trial = shownTrial();
    const event = trial ? reallocated(trial) : null;
    const cached = event
      ? { schedule: event.schedule, at: "step" + event.step + "/" + (trial.timeline || []).length }
      : trial ? view.schedules.get(trial.id) : null;
    const title = $("heatmap-title");
    if (!trial || !cached) {
      title.textContent = "Rank schedule";
      draw("plot-heatmap", null, "heatmap-note", "No trial has succeeded yet: click a trial to see its schedule.");
      view.heatmapKey = null;
      return;
    }
    const best = bestTrial();
    const role = best && best.id === trial.id ? "best trial" : "selected";
    title.textContent = "Rank schedule: trial #" + trial.number + " (" + role + ")";
    const key = trial.id + ":" + cached.at;
    if (key === view.heatmapKey) return;
    view.heatmapKey = key;
    const params = isNum(cached.schedule.parameter_count) ? cached.schedule.parameter_count : trial.parameter_count;
    let caption = "trial " + trial.number + " · " + RT.fmtInt(params) + " params · objective " + RT.fmtMetric(trial.objective);
    if (event) caption += " · re-allocated at step " + event.step;
    const space = view.search.spec && view.search.spec.space;
    const grid = space && Array.isArray(space.grid) ? space.grid.filter(isNum) : [];
    const maxRank = grid.length ? Math.max(...grid) : null;
    draw("plot-heatmap", RT.scheduleFigure(cached.schedule, caption, maxRank), "heatmap-note", "");
  }

  function renderModel() {
    const figure = RT.modelFigure(view.search, view.trials, RT.metricOf(view.search));
    draw("plot-model", figure, "model-note",
      "No performance-model fit yet: it appears once the search's strategy has fitted one on finished trials.");
  }

  function curveTrials() {
    if (!view.curvesTouched) {
      view.curves = new Set();
      for (const t of [byNumber(0), bestTrial()]) if (t) view.curves.add(t.number);
    }
    return [...view.curves].sort((a, b) => a - b).map(byNumber).filter(Boolean);
  }

  function renderCurves() {
    const chosen = curveTrials();
    const figure = RT.curvesFigure(chosen, RT.metricOf(view.search));
    draw("plot-curves", figure, "curves-note",
      chosen.length ? "The chosen trials have no learning curve yet (workers send one with each result)."
        : "Tick trials in the table to compare their learning curves.");
  }

  const SORT_VALUE = {
    number: (t) => t.number,
    kind: (t) => t.kind,
    state: (t) => t.state,
    attempt: (t) => t.attempt,
    worker: (t) => t.worker_name,
    duration: (t) => RT.trialDuration(t),
    params: (t) => t.parameter_count,
    predicted: (t) => t.predicted,
    objective: (t) => t.objective,
  };

  function sortedTrials() {
    const value = SORT_VALUE[view.sort.key] || SORT_VALUE.number;
    const dir = view.sort.dir;
    return [...view.trials].sort((a, b) => {
      const x = value(a);
      const y = value(b);
      const missingX = x === null || x === undefined;
      const missingY = y === null || y === undefined;
      if (missingX || missingY) return missingX === missingY ? a.number - b.number : missingX ? 1 : -1;
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return order * dir || a.number - b.number;
    });
  }

  // The planned count; when the written adapter holds fewer (DMLoRA pruned branches), that too.
  function paramsCell(t) {
    const cell = el("td", { className: "num", text: RT.fmtInt(t.parameter_count) });
    if (isNum(t.exported_params) && isNum(t.adapter_params) && t.exported_params < t.adapter_params) {
      cell.append(el("div", { className: "muted exported-params", text: RT.fmtInt(t.exported_params) + " written",
                              title: "parameters in the written adapter, after pruning" }));
    }
    return cell;
  }

  function trialRow(t, best, shown) {
    const box = el("input", { attrs: { type: "checkbox", "aria-label": "learning curve of trial " + t.number } });
    box.checked = view.curves.has(t.number);
    box.addEventListener("click", (event) => event.stopPropagation());
    box.addEventListener("change", () => {
      view.curvesTouched = true;
      if (box.checked) view.curves.add(t.number);
      else view.curves.delete(t.number);
      renderCurves();
    });
    let kind = t.kind === "confirm" && isNum(t.confirms) ? "confirm of #" + t.confirms : t.kind || "proxy";
    if (t.kind === "proxy" && isNum(t.steps)) {  // a multi-fidelity search: the rung and its length
      kind = "rung " + t.rung + " · " + t.steps + " steps" + (t.rung > 0 && isNum(t.config) ? " of #" + t.config : "");
      if (isNum(t.resumed_from)) kind += " (from step " + t.resumed_from + ")";  // went on from the rung below
    }
    if (t.kind === "proxy" && view.search && t.number >= view.search.max_trials && isNum(t.config)) {
      kind = "recheck of #" + t.config + (isNum(t.steps) ? " · rung " + t.rung : "");  // confirm.recheck
    }
    const stateCell = el("td", {}, [RT.stateBadge(t.state, t.reason)]);
    if (t.reason) stateCell.append(el("div", { className: "muted", text: t.reason }));
    const number = el("td", { className: "num" }, [document.createTextNode(String(t.number))]);
    if (best && best.id === t.id) number.append(el("span", { className: "best-mark", text: " ★", title: "best trial" }));
    const row = el("tr", { attrs: { "data-number": t.number } }, [
      el("td", {}, [box]),
      number,
      el("td", { text: kind }),
      stateCell,
      el("td", { className: "num", text: t.attempt + "/" + t.max_attempts }),
      el("td", { text: t.worker_name || "—" }),
      el("td", { className: "num", text: RT.fmtDuration(RT.trialDuration(t)) }),
      paramsCell(t),
      el("td", { className: "num", text: RT.fmtMetric(t.predicted) }),
      el("td", { className: "num", text: RT.fmtMetric(t.objective) }),
    ]);
    if (shown && shown.id === t.id) row.classList.add("selected");
    row.addEventListener("click", () => select(t.number));
    return row;
  }

  function renderTable() {
    const table = $("trials-table");
    for (const th of table.tHead.querySelectorAll("th[data-key]")) {
      th.classList.toggle("asc", th.dataset.key === view.sort.key && view.sort.dir > 0);
      th.classList.toggle("desc", th.dataset.key === view.sort.key && view.sort.dir < 0);
    }
    const best = bestTrial();
    const shown = shownTrial();
    const body = clear(table.tBodies[0]);
    for (const t of sortedTrials()) body.append(trialRow(t, best, shown));
  }

  async function downloadPeft() {
    const id = view.id;
    const error = $("search-error");
    error.hidden = true;
    try {
      const exported = await RT.api("/searches/" + id + "/export/peft");
      const blob = new Blob([JSON.stringify(exported.peft_config, null, 2) + "\n"], { type: "application/json" });
      const url = URL.createObjectURL(blob);
      const link = el("a", { attrs: { href: url, download: "ranktune-search-" + id + "-trial-" + exported.trial_number + "-adapter_config.json" } });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      if (e instanceof RT.AuthError) throw e;
      error.hidden = false;
      error.textContent = "Download failed: " + e.message;
    }
  }

  function bind() {
    $("download-peft").addEventListener("click", () => downloadPeft().catch(RT.reportError));
    for (const th of $("trials-table").tHead.querySelectorAll("th[data-key]")) {
      th.addEventListener("click", () => {
        const key = th.dataset.key;
        view.sort = { key, dir: view.sort.key === key ? -view.sort.dir : 1 };
        renderTable();
      });
    }
  }

  /** Plots drawn while the view was hidden took a default width: fit them to their cards. */
  function resize() {
    if (!window.Plotly) return;
    for (const id of view.bound) window.Plotly.Plots.resize($(id));
  }

  RT.detail = { load, bind, select, resize, view };
})(window.RT);
