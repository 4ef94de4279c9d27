"""Strategies by name: the registry, the ``uniform`` and ``random`` proposers, and ``propose_next``.

The contract every proposer follows is in ``search.proposer`` (re-exported here); ``tpe`` and
``perfmodel`` are in ``search.engine``, which this registry imports on first use only.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ranktune.search import probe, rungs, screening
from ranktune.search.errors import RanktuneError
from ranktune.search.proposer import (
    Direction,
    ModelSettings,
    PriorTrial,
    Proposal,
    Proposer,
    SearchContext,
    TrialRecord,
    TrialState,
)
from ranktune.search.schedule import RankSchedule

__all__ = [
    "PROPOSERS",
    "Direction",
    "ModelSettings",
    "PriorTrial",
    "Proposal",
    "Proposer",
    "RandomProposer",
    "SearchContext",
    "TrialRecord",
    "TrialState",
    "UniformProposer",
    "get_proposer",
    "propose_next",
    "register",
    "strategy_names",
]


class UniformProposer(Proposer):
    """The uniform baseline again, with a fresh proxy seed: measures seed noise, not schedules."""

    name = "uniform"
    uses_history = False

    def propose(self, context: SearchContext, number: int, trials: tuple[TrialRecord, ...]) -> Proposal:
        return Proposal(context.space.uniform(), context.seed + number, tuple(context.space.uniform_vector()))


class RandomProposer(Proposer):
    """A random hierarchical vector per trial; every trial trains with the same proxy seed.

    The generator is seeded with the pair (search seed, trial number), so searches with seeds 0 and 1
    draw independent vectors (a plain ``seed + number`` would give them 31 of 32 vectors in common)."""

    name = "random"
    uses_history = False

    def propose(self, context: SearchContext, number: int, trials: tuple[TrialRecord, ...]) -> Proposal:
        vector = context.space.random_vector(np.random.default_rng((context.seed, number)))
        return Proposal(context.space.to_schedule(vector), context.seed, tuple(vector))


PROPOSERS: dict[str, type[Proposer]] = {p.name: p for p in (UniformProposer, RandomProposer)}


def register(proposer: type[Proposer]) -> type[Proposer]:
    """Make a strategy available by its ``name`` (usable as a class decorator)."""
    PROPOSERS[proposer.name] = proposer
    return proposer


def _load_builtin() -> None:
    """``tpe`` and ``perfmodel`` live in ``search.engine`` (Optuna, LightGBM): loaded on first use."""
    if "perfmodel" not in PROPOSERS:
        from ranktune.search.engine import CascadeProposer, PerfModelProposer, TpeProposer

        for proposer in (TpeProposer, PerfModelProposer, CascadeProposer):
            PROPOSERS.setdefault(proposer.name, proposer)


def strategy_names() -> tuple[str, ...]:
    _load_builtin()
    return tuple(sorted(PROPOSERS))


def get_proposer(strategy: str) -> Proposer:
    _load_builtin()
    try:
        return PROPOSERS[strategy]()
    except KeyError:
        raise RanktuneError(
            f"strategy: {strategy!r} is not one of {', '.join(strategy_names())}", field="strategy"
        ) from None


def propose_next(
    proposer: Proposer, context: SearchContext, number: int, trials: tuple[TrialRecord, ...]
) -> Proposal:
    """Trial 0 is the uniform baseline with the search's seed; later trials follow the strategy.

    With rungs (``context.fidelity``) a trial first continues a schedule one rung up when ASHA allows
    (``search.rungs``), else it starts a new schedule at rung 0. Once the importance probe reported
    (``context.importance``), its importance-allocated schedule (``search.probe``) comes first; with
    ``context.screen`` the coarse shapes next (``search.screening``), then the strategy's."""
    fidelity = context.fidelity
    if number == 0:
        proposal = Proposal(context.space.uniform(), context.seed, tuple(context.space.uniform_vector()))
    elif fidelity is not None and (promotion := rungs.next_promotion(proposer, context, trials)):
        source = next(t for t in reversed(trials) if t.config_number == promotion.config
                      and t.rung == promotion.rung - 1)  # fmt: skip
        return Proposal(source.schedule, source.proxy_seed, source.vector, rung=promotion.rung,
                        config=promotion.config, steps=fidelity.steps(promotion.rung))  # fmt: skip
    elif (allocated := importance_allocation(context, trials)) is not None:
        proposal = Proposal(allocated, context.seed)
    elif context.screen and (shape := screening.screening_proposal(context, trials)) is not None:
        proposal = Proposal(shape[0], context.seed, shape[1])
    else:
        proposal = proposer.propose(context, number, trials)
    return proposal if fidelity is None else replace(proposal, steps=fidelity.steps(0))


def importance_allocation(context: SearchContext, trials: tuple[TrialRecord, ...]) -> RankSchedule | None:
    """The first of the probe's allocations (``probe.STRENGTHS``) no trial has tried yet, else None."""
    if context.importance is None:
        return None
    tried = {t.schedule.ranks for t in trials}
    for strength in probe.STRENGTHS:
        allocated = probe.allocate(context.space, context.importance, strength)
        if allocated is not None and allocated.ranks not in tried:
            return allocated
    return None
