// ranktune dashboard: DOM building, formatting and the REST client shared by the other scripts.
// Every piece of data reaches the page through textContent or attributes, never as HTML.
"use strict";

window.RT = window.RT || {};

(function (RT) {
  const TOKEN_KEY = "ranktune.token";
  const TERMINAL = new Set(["succeeded", "failed", "pruned", "cancelled"]);

  /** An element with text (never parsed as HTML), a class, attributes and children. */
  function el(tag, props, children) {
    const node = document.createElement(tag);
    const p = props || {};
    if (p.text !== undefined && p.text !== null) node.textContent = String(p.text);
    if (p.className) node.className = p.className;
    if (p.title) node.title = String(p.title);
    for (const [name, value] of Object.entries(p.attrs || {})) node.setAttribute(name, String(value));
    for (const child of children || []) if (child) node.append(child);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  /** Text for plotly labels: plotly reads a few HTML tags in strings, so escape what it would parse. */
  function plotText(value) {
    return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  const isNum = (x) => typeof x === "number" && Number.isFinite(x);

  function fmtMetric(x) {
    if (!isNum(x)) return "—";
    if (Math.abs(x) >= 1000) return x.toLocaleString("en-US", { maximumFractionDigits: 1 });
    return x.toFixed(4);
  }

  function fmtSigned(x) {
    return isNum(x) ? (x >= 0 ? "+" : "−") + Math.abs(x).toFixed(4) : "—";
  }

  // A paired comparison with uniform (the result's "paired"): gain, 95% interval, sample, verdict.
  function fmtPaired(p) {
    if (!p || !isNum(p.gain)) return "—";
    let sample = p.seeds + (p.seeds === 1 ? " seed" : " seeds");
    if (isNum(p.examples)) sample += " × " + fmtInt(p.examples) + " examples";
    if (!Array.isArray(p.ci)) return fmtSigned(p.gain) + " (paired over " + sample + "; too few seeds for an interval)";
    return fmtSigned(p.gain) + " (95% CI " + fmtSigned(p.ci[0]) + " to " + fmtSigned(p.ci[1]) +
      ", paired over " + sample + "): " + p.verdict;
  }

  function fmtInt(x) {
    return isNum(x) ? Math.round(x).toLocaleString("en-US") : "—";
  }

  /** API timestamps are UTC; a value without an offset is read as UTC too. */
  function parseTime(value) {
    if (!value) return null;
    const text = /(?:[zZ]|[+-]\d\d:?\d\d)$/.test(value) ? value : value + "Z";
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function fmtTime(value) {
    const date = parseTime(value);
    return date ? date.toLocaleString() : "—";
  }

  function fmtDuration(seconds) {
    if (!isNum(seconds) || seconds < 0) return "—";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.round((seconds % 3600) / 60) + " min";
  }

  function fmtAgo(value) {
    const date = parseTime(value);
    if (!date) return "—";
    return fmtDuration(Math.max(0, (Date.now() - date.getTime()) / 1000)) + " ago";
  }

  /** A trial's run time: finished − started, or until now while it runs. */
  function trialDuration(trial) {
    const started = parseTime(trial.started_at);
    if (!started) return isNum(trial.wall_time_s) ? trial.wall_time_s : null;
    const finished = parseTime(trial.finished_at);
    const end = finished ? finished.getTime() : trial.state === "running" ? Date.now() : null;
    return end === null ? null : (end - started.getTime()) / 1000;
  }

  function stateBadge(state, reason) {
    return el("span", { className: "state state-" + String(state), text: state, title: reason || "" });
  }

  /** The answer to 401/403: the page shows the sign-in form with ``message``. */
  class AuthError extends Error {}

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function token() {
    try {
      return window.localStorage.getItem(TOKEN_KEY);
    } catch (e) {
      return null;
    }
  }

  function setToken(value) {
    if (value) window.localStorage.setItem(TOKEN_KEY, value);
    else window.localStorage.removeItem(TOKEN_KEY);
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      const first = body && Array.isArray(body.detail) ? body.detail[0] : null;
      if (first && first.msg) return String(first.msg);
    } catch (e) {
      // not JSON: fall through to the status line
    }
    return "HTTP " + response.status + " " + response.statusText;
  }

  /** GET ``api/v1`` + path with the stored token; relative, so the page works under a path prefix. */
  async function api(path) {
    const headers = { Accept: "application/json" };
    const stored = token();
    if (stored) headers.Authorization = "Bearer " + stored;
    let response;
    try {
      response = await fetch("api/v1" + path, { headers, cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "the server is unreachable (" + e.message + ")");
    }
    if (response.status === 401 || response.status === 403) throw new AuthError(await errorMessage(response));
    if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
    return response.json();
  }

  /** Gain of ``best`` over ``baseline`` in the objective's direction (positive is better). */
  function gainOf(best, baseline, direction) {
    if (!isNum(best) || !isNum(baseline)) return null;
    return direction === "minimize" ? baseline - best : best - baseline;
  }

  function directionOf(search) {
    const objective = search && search.spec && search.spec.objective;
    return objective && objective.direction === "minimize" ? "minimize" : "maximize";
  }

  function metricOf(search) {
    const objective = search && search.spec && search.spec.objective;
    return (objective && objective.metric) || "objective";
  }

  Object.assign(RT, {
    TERMINAL, el, clear, plotText, isNum, fmtMetric, fmtSigned, fmtPaired, fmtInt, parseTime, fmtTime, fmtDuration,
    fmtAgo, trialDuration, stateBadge, AuthError, ApiError, token, setToken, api, gainOf, directionOf,
    metricOf,
  });
})(window.RT);
