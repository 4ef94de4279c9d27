// ranktune dashboard: plotly figures built from API data (pure functions: data in, figure out).
"use strict";

window.RT = window.RT || {};

(function (RT) {
  const TOWERS = ["vision", "projector", "language"];
  // Same order as search/sites.py KIND_ORDER; other kinds follow alphabetically.
  const KIND_ORDER = ["q", "k", "v", "qkv", "o", "gate", "up", "down", "fc1", "fc2", "fc3", "proj"];
  const BASE_LAYOUT = {
    margin: { l: 60, r: 20, t: 40, b: 48 },
    font: { family: "system-ui, sans-serif", size: 12 },
    paper_bgcolor: "#ffffff",
    plot_bgcolor: "#ffffff",
    legend: { orientation: "h", x: 0, y: 1.02, xanchor: "left", yanchor: "bottom" },
  };

  function layout(extra) {
    return Object.assign({}, BASE_LAYOUT, extra);
  }

  const better = (direction) => (a, b) => (direction === "minimize" ? a < b : a > b);

  /** Trial-history figure: one marker per finished trial, a best-so-far line, the uniform baseline.
   * Marker traces carry ``meta: "trials"`` and the trial number as customdata (clicks select it). */
  function historyFigure(trials, direction, metric, selected) {
    const finished = trials.filter((t) => RT.TERMINAL.has(t.state));
    const objectives = finished.map((t) => t.objective).filter(RT.isNum);
    // Failed and cancelled trials have no objective: they sit on the floor of the plotted range.
    const low = objectives.length ? Math.min(...objectives) : 0;
    const high = objectives.length ? Math.max(...objectives) : 1;
    const floor = low - 0.05 * (high - low || 1);
    const groups = [
      { name: "succeeded", keep: (t) => t.state === "succeeded" && t.kind !== "confirm", symbol: "circle", color: "#2f6fd0" },
      { name: "confirm runs", keep: (t) => t.state === "succeeded" && t.kind === "confirm", symbol: "diamond", color: "#1e8c4e" },
      { name: "pruned", keep: (t) => t.state === "pruned", symbol: "triangle-down", color: "#d08a2f" },
      { name: "failed", keep: (t) => t.state === "failed", symbol: "x", color: "#c0392b" },
      { name: "cancelled", keep: (t) => t.state === "cancelled", symbol: "circle-open", color: "#8a949e" },
    ];
    const data = [];
    for (const group of groups) {
      const members = finished.filter(group.keep);
      if (!members.length) continue;
      data.push({
        type: "scatter",
        mode: "markers",
        name: group.name,
        meta: "trials",
        x: members.map((t) => t.number),
        y: members.map((t) => (RT.isNum(t.objective) ? t.objective : floor)),
        customdata: members.map((t) => t.number),
        text: members.map((t) => hoverOfTrial(t)),
        hovertemplate: "%{text}<extra></extra>",
        marker: {
          symbol: group.symbol,
          color: group.color,
          size: members.map((t) => (t.number === selected ? 15 : 9)),
          line: { color: "#1d232a", width: members.map((t) => (t.number === selected ? 2 : 0)) },
        },
      });
    }
    const proxies = finished
      .filter((t) => t.state === "succeeded" && t.kind !== "confirm" && RT.isNum(t.objective))
      .sort((a, b) => a.number - b.number);
    const isBetter = better(direction);
    let best = null;
    const bestX = [];
    const bestY = [];
    for (const t of proxies) {
      if (best === null || isBetter(t.objective, best)) best = t.objective;
      bestX.push(t.number);
      bestY.push(best);
    }
    if (bestX.length) {
      data.push({
        type: "scatter", mode: "lines", name: "best so far", x: bestX, y: bestY,
        line: { shape: "hv", color: "#1e8c4e", width: 2 }, hoverinfo: "skip",
      });
    }
    const uniform = trials.find((t) => t.number === 0 && t.state === "succeeded" && RT.isNum(t.objective));
    const shapes = uniform
      ? [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: uniform.objective, y1: uniform.objective,
           line: { dash: "dot", color: "#8a949e", width: 1 } }]
      : [];
    return {
      data,
      layout: layout({
        // Whole trial numbers: one tick each while they fit, plotly's choice beyond.
        xaxis: { title: { text: "trial number" }, zeroline: false, tickformat: "d",
                 dtick: trials.length <= 20 ? 1 : undefined },
        yaxis: { title: { text: RT.plotText(metric) }, zeroline: false },
        hovermode: "closest",
        shapes,
        annotations: uniform
          ? [{ xref: "paper", x: 1, y: uniform.objective, text: "uniform", showarrow: false, yanchor: "bottom",
               xanchor: "right", font: { color: "#66707a", size: 11 } }]
          : [],
      }),
    };
  }

  function hoverOfTrial(t) {
    const lines = ["trial " + t.number + (t.kind === "confirm" ? " (confirm of " + t.confirms + ")" : ""), t.state];
    if (RT.isNum(t.objective)) lines.push("objective " + RT.fmtMetric(t.objective));
    if (RT.isNum(t.predicted)) lines.push("predicted " + RT.fmtMetric(t.predicted));
    lines.push(RT.fmtInt(t.parameter_count) + " params");
    if (t.reason) lines.push(String(t.reason).slice(0, 80));
    return lines.map(RT.plotText).join("<br>");
  }

  function rowKey(site) {
    if (site.layer === null || site.layer === undefined) return { tower: site.tower, layer: -1, label: String(site.tower) };
    return { tower: site.tower, layer: site.layer, label: site.tower + " L" + site.layer };
  }

  function towerIndex(tower) {
    const i = TOWERS.indexOf(tower);
    return i < 0 ? TOWERS.length : i;
  }

  function kindIndex(kind) {
    const i = KIND_ORDER.indexOf(kind);
    return i < 0 ? KIND_ORDER.length : i;
  }

  /** Heatmap of a RankSchedule JSON: rows tower × layer, columns module kind, z the rank. */
  function scheduleFigure(schedule, caption, maxRank) {
    const sites = (schedule && Array.isArray(schedule.sites)) ? schedule.sites : [];
    const rows = new Map();
    const kinds = new Set();
    for (const site of sites) {
      const key = rowKey(site);
      if (!rows.has(key.label)) rows.set(key.label, key);
      kinds.add(String(site.kind));
    }
    const rowList = [...rows.values()].sort(
      (a, b) => towerIndex(a.tower) - towerIndex(b.tower) || String(a.tower).localeCompare(String(b.tower)) || a.layer - b.layer
    );
    const kindList = [...kinds].sort((a, b) => kindIndex(a) - kindIndex(b) || a.localeCompare(b));
    const rowAt = new Map(rowList.map((r, i) => [r.label, i]));
    const colAt = new Map(kindList.map((k, i) => [k, i]));
    const z = rowList.map(() => kindList.map(() => null));
    const text = rowList.map(() => kindList.map(() => []));
    for (const site of sites) {
      const r = rowAt.get(rowKey(site).label);
      const c = colAt.get(String(site.kind));
      const rank = RT.isNum(site.rank) ? site.rank : 0;
      const params = rank * ((site.in_features || 0) + (site.out_features || 0));
      z[r][c] = (z[r][c] || 0) + rank;
      text[r][c].push(RT.plotText(site.name) + "<br>rank " + rank + " · " + RT.fmtInt(params) + " params");
    }
    const height = Math.max(380, 22 * rowList.length + 110);
    return {
      height,
      data: [{
        type: "heatmap",
        x: kindList.map(RT.plotText),
        y: rowList.map((r) => RT.plotText(r.label)),
        z,
        text: text.map((row) => row.map((cell) => cell.join("<br>"))),
        hovertemplate: "%{y} · %{x}<br>%{text}<extra></extra>",
        texttemplate: "%{z}",
        // White is rank 0 (no adapter); darker is more rank.
        colorscale: [[0, "#f7fbff"], [0.25, "#c6dbef"], [0.5, "#6baed6"], [0.75, "#2171b5"], [1, "#08306b"]],
        // One colour scale for every trial of a search (its grid's largest rank), so heatmaps compare.
        zmin: 0,
        zmax: Math.max(1, RT.isNum(maxRank) ? maxRank : 0, ...z.flat().filter(RT.isNum)),
        xgap: 2,
        ygap: 2,
        colorbar: { title: { text: "rank" } },
      }],
      layout: layout({
        title: { text: RT.plotText(caption), font: { size: 13 } },
        xaxis: { side: "top", type: "category" },
        yaxis: { autorange: "reversed", type: "category", automargin: true },
        margin: { l: 100, r: 20, t: 60, b: 20 },
        height,
      }),
    };
  }

  function ranks(values) {
    const order = values.map((v, i) => [v, i]).sort((a, b) => a[0] - b[0]);
    const out = new Array(values.length);
    for (let i = 0; i < order.length; ) {
      let j = i;
      while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
      for (let k = i; k <= j; k++) out[order[k][1]] = (i + j) / 2;
      i = j + 1;
    }
    return out;
  }

  /** Spearman's rank correlation (ties get average ranks); null when undefined. */
  function spearman(xs, ys) {
    if (xs.length < 2) return null;
    const rx = ranks(xs);
    const ry = ranks(ys);
    const mean = (v) => v.reduce((s, x) => s + x, 0) / v.length;
    const mx = mean(rx);
    const my = mean(ry);
    let sxy = 0, sxx = 0, syy = 0;
    for (let i = 0; i < rx.length; i++) {
      sxy += (rx[i] - mx) * (ry[i] - my);
      sxx += (rx[i] - mx) ** 2;
      syy += (ry[i] - my) ** 2;
    }
    return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : null;
  }

  /** Predicted vs actual: the search's stored fit when present, else the proposals' predictions. */
  function modelFigure(search, trials, metric) {
    const model = search && search.performance_model;
    let points = [];
    let title;
    if (model && Array.isArray(model.points) && model.points.length) {
      points = model.points.filter((p) => RT.isNum(p.predicted) && RT.isNum(p.actual));
      const rho = RT.isNum(model.spearman) ? model.spearman : spearman(points.map((p) => p.predicted), points.map((p) => p.actual));
      title = "Spearman " + (RT.isNum(rho) ? rho.toFixed(3) : "—") + " · MAE " + RT.fmtMetric(model.mae) +
        " · " + (RT.isNum(model.trials) ? model.trials : points.length) + " trials";
    } else {
      points = trials
        .filter((t) => t.state === "succeeded" && RT.isNum(t.predicted) && RT.isNum(t.objective))
        .map((t) => ({ trial_number: t.number, predicted: t.predicted, actual: t.objective }));
      const rho = spearman(points.map((p) => p.predicted), points.map((p) => p.actual));
      title = "Spearman " + (RT.isNum(rho) ? rho.toFixed(3) : "—") + " · at proposal time · " + points.length + " trials";
    }
    if (points.length === 0) return null;
    const all = points.flatMap((p) => [p.predicted, p.actual]);
    const lo = Math.min(...all);
    const hi = Math.max(...all);
    return {
      data: [
        {
          type: "scatter", mode: "markers", name: "trials", x: points.map((p) => p.predicted), y: points.map((p) => p.actual),
          customdata: points.map((p) => p.trial_number),
          hovertemplate: "trial %{customdata}<br>predicted %{x:.4f}<br>actual %{y:.4f}<extra></extra>",
          marker: { color: "#2f6fd0", size: 9 },
        },
        { type: "scatter", mode: "lines", name: "perfect", x: [lo, hi], y: [lo, hi], hoverinfo: "skip",
          line: { dash: "dot", color: "#8a949e" } },
      ],
      layout: layout({
        title: { text: title, font: { size: 13 } },
        showlegend: false,
        xaxis: { title: { text: "predicted " + RT.plotText(metric) } },
        yaxis: { title: { text: "actual " + RT.plotText(metric) } },
        hovermode: "closest",
      }),
    };
  }

  const PALETTE = ["#2f6fd0", "#c0392b", "#1e8c4e", "#d08a2f", "#7b4fc9", "#178a8a", "#b83b8f", "#5a6470"];

  /** Loss (solid, left axis) and metric (dotted, right axis) against step for each chosen trial. */
  function curvesFigure(trials, metric) {
    const data = [];
    trials.forEach((t, i) => {
      const curve = (Array.isArray(t.curve) ? t.curve : []).filter((p) => p && RT.isNum(p.step));
      const color = PALETTE[i % PALETTE.length];
      const loss = curve.filter((p) => RT.isNum(p.loss));
      const value = curve.filter((p) => RT.isNum(p.metric));
      if (loss.length) {
        data.push({ type: "scatter", mode: "lines", name: "#" + t.number + " loss", x: loss.map((p) => p.step),
          y: loss.map((p) => p.loss), line: { color } });
      }
      if (value.length) {
        data.push({ type: "scatter", mode: "lines+markers", name: "#" + t.number + " " + RT.plotText(metric),
          x: value.map((p) => p.step), y: value.map((p) => p.metric), yaxis: "y2", line: { color, dash: "dot" } });
      }
    });
    if (!data.length) return null;
    return {
      data,
      layout: layout({
        xaxis: { title: { text: "step" } },
        yaxis: { title: { text: "loss" } },
        yaxis2: { title: { text: RT.plotText(metric) }, overlaying: "y", side: "right", tickformat: ".4~g", automargin: true },
        margin: { l: 60, r: 60, t: 40, b: 48 },
      }),
    };
  }

  Object.assign(RT, { historyFigure, scheduleFigure, modelFigure, curvesFigure, spearman });
})(window.RT);
