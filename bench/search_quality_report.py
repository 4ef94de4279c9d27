"""Rendering of bench/search_quality.py's results as the sections of bench/RESULTS.md."""

from __future__ import annotations

import statistics
from dataclasses import fields
from typing import Any

from bench.results_md import table, wrap, write_section
from bench.search_quality_common import EVA_RHO, FULL, GRID, HYDRA_GAIN, Config, adalora_init_r, grid_for

__all__ = ["quality_heading", "render_quality", "render_speed", "table", "wrap", "write_section"]


def pct(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "-"
    return f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f} (n={summary['n']})"


def rho(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def quality_heading(results: dict[str, Any]) -> str:
    """One RESULTS.md section per set of tasks: a run on one task leaves the other task's figures be."""
    rank = results["config"].get("budget_rank", FULL.budget_rank)
    budget = "" if rank == FULL.budget_rank else f", budget rank {rank}"
    return f"Search quality ({', '.join(results['config']['tasks'])}{budget})"


def paired_ci(figures: dict[str, Any]) -> str:
    """The paired gain over uniform with its 95% interval, in points ("-" where not measured)."""
    p = figures.get("paired")
    if not p or p.get("ci") is None:
        return "-"
    low, high = p["ci"]
    return f"{100 * p['gain']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def full_runs(figures: dict[str, Any]) -> str:
    value = (figures.get("compute") or {}).get("full_runs")
    return "-" if value is None else f"{value:.1f}"


def asha_notes(r: dict[str, Any], c: Config) -> list[str]:
    """Bullets on the ``+asha`` rows: what their figures mean, and each search's trials per rung."""
    rows = {s: f for s, f in r["strategies"].items() if f.get("rungs")}
    if not rows:
        return []
    first = next(iter(rows.values()))["rungs"]
    out = [f"- `+asha` rows: the base strategy with multi-fidelity search (ASHA, eta {first['eta']}), "
           f"compute-matched: each search proposes until its trials' steps reach {c.trials} × {c.steps} = "
           f"{c.trials * c.steps:,}, a plain search's proxy steps. Its proxy best is the best trial of the "
           "highest rung reached (val, at that rung's steps), as the confirmation ranks them; its compute "
           "counts every trial at its own length."]  # fmt: skip
    for strategy, f in rows.items():
        g, spent = f["rungs"], f["proxy_steps"]
        best = {seed: g["steps"][rung] for seed, rung in g["best_rung"].items()}
        searches = [f"{'/'.join(str(n) for n in counts)} (seed {seed}: {spent[seed]:,} steps, best at "
                    f"{best[seed]})" for seed, counts in g["counts"].items()]  # fmt: skip
        out.append(f"- `{strategy}` trials per rung, rungs {'/'.join(str(n) for n in g['steps'])}: "
                   + "; ".join(searches) + "." + resume_note(g))  # fmt: skip
    return out


def resume_note(rungs: dict[str, Any]) -> str:
    """What resuming each promotion from its checkpoint, instead of training it again, would save."""
    from ranktune.search.fidelity import Fidelity

    steps = rungs["steps"]
    fidelity = Fidelity(steps[0], steps[-1], rungs["eta"])
    if list(fidelity.rungs) != steps:
        return ""
    counts = [dict(enumerate(c)) for c in rungs["counts"].values()]
    totals = [sum(fidelity.full_run_equivalents(c, resume=r) for c in counts) for r in (False, True)]
    if not totals[0]:
        return ""
    per_search = [total / len(rungs["counts"]) for total in totals]
    saved = 100 * (1 - totals[1] / totals[0])
    if rungs.get("resumed"):
        return (
            f" Promotions went on from the rung below's training state (`--resume`): {per_search[1]:.1f} "
            f"top-rung runs of training per search, against {per_search[0]:.1f} from scratch "
            f"({saved:.0f}% less)."
        )
    return (
        f" Promotions train from scratch; resumed from their checkpoints these rung runs would cost "
        f"{per_search[1]:.1f} instead of {per_search[0]:.1f} top-rung runs per search ({saved:.0f}% less)."
    )


def render_task(name: str, r: dict[str, Any], c: Config) -> str:
    rank = c.budget_rank
    rows = [[s, pct(f["proxy_best"]), pct(f["confirmed"]), f"{f['gain_points']:+.1f}", paired_ci(f),
             pct(f["service_result"]), full_runs(f)] for s, f in r["strategies"].items()]  # fmt: skip
    if "uniform" not in r["strategies"]:  # not searched: its schedule is every search's trial 0
        baseline = pct(r["uniform_confirmed"])
        rows.insert(0, [f"uniform rank {rank} (not searched)", "-", baseline, "+0.0", "-", "-", "1.0"])
    a = r["adalora"]
    if a:
        rows.append([f"PEFT AdaLoRA {adalora_init_r(rank)}→{rank}", "-", pct(a["confirmed"]),
                     f"{a['gain_points']:+.1f} (same seeds)", paired_ci(a), "-", full_runs(a)])  # fmt: skip
    e = r.get("eva")
    if e:
        rows.append([f"PEFT EVA r {rank}, rho {EVA_RHO:g}", "-", pct(e["confirmed"]),
                     f"{e['gain_points']:+.1f} (same seeds)", paired_ci(e), "-", full_runs(e)])  # fmt: skip
    noise = r["uniform_proxy_over_seeds"]
    out = [f"### {name}: `{r['model']}` + `{r['task']}`", "",
           f"{r['sites']} sites, budget {r['budget_params']:,} params (uniform rank {rank}), grid "
           f"{list(grid_for(rank))}.", "",
           table(["strategy", f"proxy best of {c.trials} (val, %)", "its schedule confirmed (test, %)",
                  "gain over uniform (points)", "paired gain [95% CI] (points)",
                  "service result: best of top-k + uniform (test, %)",
                  "compute per search (full-run equivalents)"], rows), "",
           "- Paired gain: each search's proxy-best against uniform on the same confirm seeds and test "
           "examples (`search.paired`); compute: one search's proxies and confirmation runs (PEFT rows: one "
           "run) in units of one full-length uniform run.",
           f"- Uniform rank {rank} confirmed: {pct(r['uniform_confirmed'])}; "
           + (f"the same schedule's proxy objective over the proxy seeds of strategy `uniform` (seed "
              f"noise): {pct(noise)}." if noise
              else "no seed-noise figure (strategy `uniform` not run).")]  # fmt: skip
    asha = asha_notes(r, c)
    out += asha
    length = f"{c.steps}-step " if asha else ""  # +asha trials at other lengths are left out
    if a:
        out.append(
            f"- AdaLoRA kept {a['final_rank_sum']} singular values in all (target {rank} × "
            f"{r['sites']} sites), {a['final_params']:,} LoRA-equivalent params against the budget's "
            f"{a['budget_params']:,}; it trains {a['params_while_training']:,} until pruning."
        )
    if e:
        out.append(
            f"- EVA redistributed {e['final_rank_sum']} ranks (r {rank} × {r['sites']} sites, rho "
            f"{EVA_RHO:g}): {e['final_params']:,} LoRA params against the budget's {e['budget_params']:,}."
        )
    if r["perfmodel_reach"]:
        reach = "; ".join(f"seed {x['seed']}: " + (f"{x['perfmodel_trials']} trials" if x["perfmodel_trials"]
                          else f"not within {c.trials}") + f" (tpe's best {100 * x['tpe_best']:.1f})"
                          for x in r["perfmodel_reach"])  # fmt: skip
        out.append(f"- Trials perfmodel needed to reach tpe's best-of-{c.trials} proxy objective: {reach}.")
    curve = [[str(x["n"]), str(x["held_out"]), rho(x["spearman_first_n"]), rho(x["spearman_random_n"])]
             for x in r["model_curve"]]  # fmt: skip
    pool = f"{r['model_pool']} distinct {length}proxy trials"
    out += ["", f"Performance model on the {pool} of the non-uniform "
            "strategies (targets: gain over the search's trial 0), scored on the trials it was not "
            "fitted on:", "",
            table(["fitted on n", "held out", "Spearman, first n trials",
                   "Spearman, n at random (mean of 5)"], curve) if curve else "(too few trials)"]  # fmt: skip
    versus = r.get("model_vs_full") or []
    if versus:
        body = [[x["strategy"], str(x["n"]), rho(x["spearman"]), str(x["searches"])] for x in versus]
        out += [
            "",
            "Each search's performance model (the engine's own fit on its first n trials; with "
            f"rungs predicting the top rung) against the confirmed metric: Spearman with the mean "
            f"{c.confirm_steps}-step test metric of the {versus[0]['schedules']} schedules run at full "
            "length (mean over search seeds; goal 0.6 by 24 trials):",
            "",
            table(["strategy", "fitted on n trials", "Spearman vs confirmed", "searches"], body),
        ]
    p = r["proxy_vs_full"]
    ci = p.get("spearman_ci")
    interval = f" (95% bootstrap CI {rho(ci[0])} to {rho(ci[1])})" if ci else ""
    out.append(f"\nProxy ({c.steps} steps, val) vs full length ({c.confirm_steps} steps, test): Spearman "
               f"{rho(p['spearman'])}{interval} over {p['schedules']} schedules, {p['extra_schedules']} of "
               "them run at full length only for this figure (1 seed)"
               + ("; `+asha` trials at other lengths left out." if asha else "."))  # fmt: skip
    return "\n".join(out)


def protocol_differences(c: Config) -> list[str]:
    def shown(value: Any) -> str:
        if isinstance(value, tuple):  # tasks, strategies; fidelity as its flag writes it (MIN:MAX:ETA)
            return ",".join(value) if all(isinstance(v, str) for v in value) else ":".join(map(str, value))
        return "none" if value is None else str(value)

    return [f"{f.name.replace('_', '-')} {shown(getattr(c, f.name))} (issue: {shown(getattr(FULL, f.name))})"
            for f in fields(Config) if getattr(c, f.name) != getattr(FULL, f.name)]  # fmt: skip


def stored_compute(results: dict[str, Any]) -> str:
    """The training time the whole store holds (every slice of a resumed protocol), when recorded."""
    seconds = results.get("store_train_s")
    return f"; {seconds / 3600:.1f} core-hours of training in its store" if seconds else ""


def render_quality(results: dict[str, Any]) -> str:
    command = results["command"]
    c = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["config"].items()})
    diffs = protocol_differences(c)
    runs = sum(t["runs"] for t in results["tasks"].values())
    out = [f"Command: `{command}` ({results['date']}, 2 shared CPU cores, no GPU, "
           f"{results.get('jobs', 1)} process(es) of {results.get('threads', 2)} torch thread(s); {runs} "
           f"fine-tunes{stored_compute(results)}, this invocation {results['wall_s'] / 60:.0f} min wall)", "",
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
        if "perfmodel" in s:
            confirmed = {
                "uniform": r["uniform_confirmed"]["mean"],
                **{k: v["confirmed"]["mean"] for k, v in s.items()},
            }
            gain, best = s["perfmodel"]["gain_points"], max(confirmed, key=lambda k: confirmed[k])
            out.append(f"\n**Goal ({name})**: perfmodel {gain:+.1f} points over uniform "
                       f"(goal ≥ +{HYDRA_GAIN}): "
                       f"{'met' if gain >= HYDRA_GAIN else 'not met'}; best confirmed strategy: {best} "
                       f"({'met' if best == 'perfmodel' else 'not met'}).")  # fmt: skip
    return "\n".join(out)


def render_speed(results: dict[str, Any]) -> str:
    speed, command = results["model_speed"], results["command"]
    variants = speed["variants"]
    baseline = statistics.median(next(iter(variants.values()))["total_s"])
    rows = []
    for name, entry in variants.items():
        fit, total = statistics.median(entry["fit_s"]), statistics.median(entry["total_s"])
        rows.append([name, f"{fit:.2f} s", f"{total:.2f} s", f"{total / baseline:.2f}x",
                     ", ".join(f"{t:.2f}" for t in entry["total_s"]), rho(entry["spearman"])])  # fmt: skip
    total = statistics.median(list(variants.values())[-1]["total_s"])
    return "\n".join([
        f"Command: `{command}` ({results['date']}, 2 CPU cores, 5 bagged LightGBM regressors of 80 rounds, "
        f"1 thread each; 1-minute load average {speed['load_average']:.1f} when it started; the variants "
        "alternate within each repeat)", "",
        table(["variant", f"fit on {speed['rows']:,} trials (median)",
               f"fit + score {speed['candidates']:,} (median)", "ratio", "fit + score runs (s)",
               "Spearman vs noiseless"], rows), "",
        f"tiny-vlm's {speed['sites']} real sites, {speed['features']} features, random ranks on grid "
        f"{list(GRID)}; targets linear in the features plus noise; Spearman of the candidates' scores "
        f"against their noiseless targets. The default draws each member's bootstrap resample at "
        f"{speed['member_rows']:,} rows (m-out-of-n) instead of all n. Goal < 2 s: "
        f"**{'met' if total < 2.0 else 'not met'}**.",
    ])  # fmt: skip
