"""Project continuous per-site rank weights onto the rank grid under a parameter budget.

The result never exceeds the budget; the caller checks the 97% floor and falls back if needed.
Steps: solve exactly for the scale λ with Σ min(λ·w, cap)·cost = budget (piecewise linear),
floor every continuous rank onto the grid, then spend the slack greedily on the sites that
were rounded down the most (a heap keeps it O(n log n)).
"""

from __future__ import annotations

import heapq

import numpy as np
from numpy.typing import NDArray

_NEGLIGIBLE = 1e-9  # weights this far below the largest one count as "no adapter"
_SNAP = 1e-9  # tolerate float error so a continuous 8.0 - 1e-12 still lands on grid rank 8


def solve_scale(
    weights: NDArray[np.float64], caps: NDArray[np.float64], costs: NDArray[np.float64], budget: float
) -> float:
    """The λ at which Σ min(λ·w, cap)·cost first reaches ``budget`` (inf if it never does)."""
    eligible = (weights > 0) & (caps > 0)
    w, cap, cost = weights[eligible], caps[eligible], costs[eligible]
    if w.size == 0 or float(np.dot(cap, cost)) <= budget:
        return float("inf")
    breakpoints = cap / w
    order = np.argsort(breakpoints, kind="stable")
    bp, w, cap, cost = breakpoints[order], w[order], cap[order], cost[order]
    saturated = np.concatenate(([0.0], np.cumsum(cap * cost)))[:-1]  # spent by sites before k
    free_slope = np.cumsum((w * cost)[::-1])[::-1]  # Σ w·cost of sites k.. still below their cap
    totals = saturated + bp * free_slope
    k = int(np.searchsorted(totals, budget, side="left"))
    return float((budget - saturated[k]) / free_slope[k])


def project(
    weights: NDArray[np.float64],
    cap_index: NDArray[np.int64],
    costs: NDArray[np.int64],
    grid: NDArray[np.int64],
    budget: int,
    fill_zero_weight: bool,
) -> NDArray[np.int64]:
    """Grid index per site with Σ grid[index]·cost ≤ budget, as close to the weights' shape as fits."""
    top = float(weights.max()) if weights.size else 0.0
    weights = weights / top if top > 0 else weights
    weights = np.where(weights < _NEGLIGIBLE, 0.0, weights)  # subnormal weights would overflow λ
    caps = grid[cap_index].astype(np.float64)
    costs_f = costs.astype(np.float64)
    scale = solve_scale(weights, caps, costs_f, float(budget))
    wanted = np.minimum(caps, weights * scale) if np.isfinite(scale) else np.where(weights > 0, caps, 0.0)
    index = np.searchsorted(grid, wanted * (1 + _SNAP) + _SNAP, side="right") - 1
    index = np.minimum(index, cap_index)
    slack = budget - int(np.dot(grid[index], costs))
    slack = _fill(index, wanted, cap_index, costs, grid, slack, weights > 0)
    if fill_zero_weight:
        _fill(index, wanted, cap_index, costs, grid, slack, weights <= 0)
    return index


def _fill(
    index: NDArray[np.int64],
    wanted: NDArray[np.float64],
    cap_index: NDArray[np.int64],
    costs: NDArray[np.int64],
    grid: NDArray[np.int64],
    slack: int,
    allowed: NDArray[np.bool_],
) -> int:
    """Raise sites one grid step at a time, most-wanted first, while the slack pays for it."""
    grid_list = grid.tolist()
    costs_list = costs.tolist()
    caps_list = cap_index.tolist()
    wanted_list = wanted.tolist()
    idx = index.tolist()
    heap: list[tuple[float, int]] = []
    for site in np.flatnonzero(allowed & (index < cap_index)).tolist():
        heap.append((_priority(wanted_list[site], grid_list, idx[site]), site))
    heapq.heapify(heap)
    while heap:
        _, site = heapq.heappop(heap)
        cur = idx[site]
        step_cost = (grid_list[cur + 1] - grid_list[cur]) * costs_list[site]
        if step_cost > slack:
            continue  # the slack only shrinks, so this step will never fit later either
        slack -= step_cost
        idx[site] = cur + 1
        if cur + 1 < caps_list[site]:
            heapq.heappush(heap, (_priority(wanted_list[site], grid_list, cur + 1), site))
    index[:] = idx
    return slack


def _priority(wanted: float, grid: list[int], cur: int) -> float:
    # Min-heap key: the share of the next grid step the site still wants, negated.
    return -(wanted - grid[cur]) / (grid[cur + 1] - grid[cur])
