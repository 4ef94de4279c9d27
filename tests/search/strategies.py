"""Hypothesis strategies: random models (site lists), grids, budgets and search vectors."""

from __future__ import annotations

from hypothesis import strategies as st

from ranktune.search.grid import RankGrid
from ranktune.search.sites import AdapterSite

KINDS = {
    "vision": ("q", "k", "v", "o", "fc1", "fc2"),
    "projector": ("fc1", "fc2"),
    "language": ("q", "k", "v", "o", "gate", "up", "down"),
}
WIDTHS = (3, 8, 16, 24, 64, 96, 128, 256, 384, 1024, 4096)


@st.composite
def site_lists(draw: st.DrawFn, max_layers: int = 12) -> tuple[AdapterSite, ...]:
    towers = draw(st.lists(st.sampled_from(list(KINDS)), min_size=1, max_size=3, unique=True))
    sites = []
    for tower in towers:
        layers = [None] if tower == "projector" else list(range(draw(st.integers(1, max_layers))))
        kinds = draw(
            st.lists(st.sampled_from(KINDS[tower]), min_size=1, max_size=len(KINDS[tower]), unique=True)
        )
        shapes = {k: (draw(st.sampled_from(WIDTHS)), draw(st.sampled_from(WIDTHS))) for k in kinds}
        for layer in layers:
            for kind in kinds:
                fan_in, fan_out = shapes[kind]
                name = f"{tower}.{'p' if layer is None else layer}.{kind}"
                sites.append(AdapterSite(name, tower, layer, kind, fan_in, fan_out))
    return tuple(sites)


@st.composite
def grids(draw: st.DrawFn) -> RankGrid:
    values = draw(st.lists(st.integers(1, 128), min_size=1, max_size=10, unique=True))
    return RankGrid((0, *values))


def vectors(length: int) -> st.SearchStrategy[list[float]]:
    unit = st.one_of(
        st.floats(0.0, 1.0, allow_nan=False),
        st.sampled_from([0.0, 1.0, 0.5]),
    )
    return st.lists(unit, min_size=length, max_size=length)
