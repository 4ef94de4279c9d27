"""Rendering of bench/search_quality.py's results as the sections of bench/RESULTS.md."""

from __future__ import annotations

import re
import statistics
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Any

from bench.search_quality import ADALORA_INIT_R, BUDGET_RANK, FULL, GRID, HYDRA_GAIN, RESULTS, Config


def pct(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "-"
    return f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f} (n={summary['n']})"


def rho(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def wrap(text: str, width: int = 105) -> str:
    """Prose lines wrapped as the rest of RESULTS.md is; tables and headings stay on one line."""
    lines = [line if line.startswith(("|", "#")) else textwrap.fill(
        line, width, break_on_hyphens=False, subsequent_indent="  " if line.startswith("- ") else "")
        for line in text.split("\n")]  # fmt: skip
    return "\n".join(lines)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render_task(name: str, r: dict[str, Any], c: Config) -> str:
    rows = [[s, pct(f["proxy_best"]), pct(f["confirmed"]), f"{f['gain_points']:+.1f}",
             pct(f["service_result"])] for s, f in r["strategies"].items()]  # fmt: skip
    a = r["adalora"]
    if a:
        rows.append([f"PEFT AdaLoRA {ADALORA_INIT_R}→{BUDGET_RANK}", "-", pct(a["confirmed"]),
                     f"{a['gain_points']:+.1f} (same seeds)", "-"])  # fmt: skip
    out = [f"### {name}: `{r['model']}` + `{r['task']}`", "",
           f"{r['sites']} sites, budget {r['budget_params']:,} params (uniform rank {BUDGET_RANK}), grid "
           f"{list(GRID)}.", "",
           table(["strategy", f"proxy best of {c.trials} (val, %)", "its schedule confirmed (test, %)",
                  "gain over uniform (points)", "service result: best of top-k + uniform (test, %)"],
                 rows), "",
           f"- Uniform rank {BUDGET_RANK} confirmed: {pct(r['uniform_confirmed'])}; the same schedule's "
           f"proxy objective over the proxy seeds of strategy `uniform` (seed noise): "
           f"{pct(r['uniform_proxy_over_seeds'])}."]  # fmt: skip
    if a:
        out.append(
            f"- AdaLoRA kept {a['final_rank_sum']} singular values in all (target {BUDGET_RANK} × "
            f"{r['sites']} sites), {a['final_params']:,} LoRA-equivalent params against the budget's "
            f"{a['budget_params']:,}; it trains {a['params_while_training']:,} until pruning."
        )
    if r["perfmodel_reach"]:
        reach = "; ".join(f"seed {x['seed']}: " + (f"{x['perfmodel_trials']} trials" if x["perfmodel_trials"]
                          else f"not within {c.trials}") + f" (tpe's best {100 * x['tpe_best']:.1f})"
                          for x in r["perfmodel_reach"])  # fmt: skip
        out.append(f"- Trials perfmodel needed to reach tpe's best-of-{c.trials} proxy objective: {reach}.")
    curve = [[str(x["n"]), str(x["held_out"]), rho(x["spearman_first_n"]), rho(x["spearman_random_n"])]
             for x in r["model_curve"]]  # fmt: skip
    out += ["", f"Performance model on the {r['model_pool']} distinct proxy trials of the non-uniform "
            "strategies (targets: gain over the search's trial 0), scored on the trials it was not "
            "fitted on:", "",
            table(["fitted on n", "held out", "Spearman, first n trials",
                   "Spearman, n at random (mean of 5)"], curve) if curve else "(too few trials)"]  # fmt: skip
    p = r["proxy_vs_full"]
    out.append(f"\nProxy ({c.steps} steps, val) vs full length ({c.confirm_steps} steps, test): Spearman "
               f"{rho(p['spearman'])} over {p['schedules']} schedules, {p['extra_schedules']} of them run at "
               "full length only for this figure (1 seed).")  # fmt: skip
    return "\n".join(out)


def protocol_differences(c: Config) -> list[str]:
    def shown(value: Any) -> str:
        return ",".join(value) if isinstance(value, tuple) else str(value)

    return [f"{f.name.replace('_', '-')} {shown(getattr(c, f.name))} (issue: {shown(getattr(FULL, f.name))})"
            for f in fields(Config) if getattr(c, f.name) != getattr(FULL, f.name)]  # fmt: skip


def render_quality(results: dict[str, Any]) -> str:
    command = results["command"]
    c = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["config"].items()})
    diffs = protocol_differences(c)
    runs = sum(t["runs"] for t in results["tasks"].values())
    out = [f"Command: `{command}` ({results['date']}, 2 shared CPU cores, no GPU, "
           f"{results.get('threads', 2)} torch thread(s); {runs} "
           f"fine-tunes, {results['wall_s'] / 60:.0f} min wall)", "",
           "Same proposer code as the service, trials one at a time (parallelism 1), no transfer from "
           "earlier searches; proxy metric on val at the end of each run. Confirmation runs the service's "
           f"plan (top-{c.top_k} + uniform, {c.confirm_seeds} seeds of {c.confirm_steps} steps) on test. The "
           "strategy's figure is its proxy-best schedule confirmed; the service's result picks the best of "
           "top-k and uniform on those same test runs, so it is optimistic. ± is the std over search seeds "
           "× confirm seeds.", "",
           ("**Differs from the issue's protocol**: " + "; ".join(diffs) + ".") if diffs
           else "The issue's full protocol."]  # fmt: skip
    for name, r in results["tasks"].items():
        out += ["", render_task(name, r, c)]
        s = r["strategies"]
        if "perfmodel" in s and "uniform" in s:
            gain, best = s["perfmodel"]["gain_points"], max(s, key=lambda k: s[k]["confirmed"]["mean"])
            out.append(f"\n**Goal ({name})**: perfmodel {gain:+.1f} points over uniform "
                       f"(goal ≥ +{HYDRA_GAIN}): "
                       f"{'met' if gain >= HYDRA_GAIN else 'not met'}; best confirmed strategy: {best} "
                       f"({'met' if best == 'perfmodel' else 'not met'}).")  # fmt: skip
    return "\n".join(out)


def render_speed(results: dict[str, Any]) -> str:
    speed, command = results["model_speed"], results["command"]
    total = statistics.median(speed["total_s"])
    fit = statistics.median(speed["fit_s"])
    rows = [[f"featurize + fit on {speed['rows']:,} synthetic trials", f"{fit:.2f} s",
             ", ".join(f"{t:.2f}" for t in speed["fit_s"])],
            [f"… + featurize and score {speed['candidates']:,} candidates", f"{total:.2f} s",
             ", ".join(f"{t:.2f}" for t in speed["total_s"])]]  # fmt: skip
    return "\n".join([
        f"Command: `{command}` ({results['date']}, 2 shared CPU cores, the model's defaults: "
        f"5 bagged LightGBM regressors, 1 thread each; 1-minute load average {speed['load_average']:.1f} "
        "when it started)", "",
        table(["what", "median of 3", "runs (s)"], rows), "",
        f"tiny-vlm's {speed['sites']} real sites, {speed['features']} features, random ranks on grid "
        f"{list(GRID)}; "
        f"targets linear in the features plus noise (Spearman of the scores against the noiseless targets "
        f"{rho(speed['spearman'])}). Goal < 2 s: **{'met' if total < 2.0 else 'not met'}**.",
    ])  # fmt: skip


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Replace ``## heading`` (up to the next ``## ``) in RESULTS.md or append it; the rest stays as the
    file is now (other sections belong to other benches)."""
    text = path.read_text()
    block = f"## {heading}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)
