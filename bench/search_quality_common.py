"""What the search-quality bench modules share: the protocol's constants, its ``Config`` and the small
helpers every part of it uses. Imports nothing of the bench's own, so every module can import it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ranktune.search.fidelity import Fidelity
from ranktune.search.grid import RankGrid
from ranktune.search.space import HierarchicalSpace
from ranktune.search.strategies import TrialRecord

TASKS = {"tiny-vlm": ("builtin:tiny-vlm", "builtin:digits-vqa"),
         "fashion": ("builtin:tiny-vlm", "builtin:fashion-vqa"),
         "minilm": ("builtin:minilm", "builtin:minilm-stdlib"),
         "tweets": ("builtin:minilm", "builtin:minilm-tweets")}  # fmt: skip
STRATEGIES = ("uniform", "random", "tpe", "perfmodel")
ASHA = "+asha"  # a label's suffix: its base strategy in a multi-fidelity search (needs Config.fidelity)
PROBE = "+probe"  # a label's suffix: the search starts with the importance probe (search.probe)
CASCADE = "cascade"  # the service's strategy: perfmodel over rungs after the probe (needs Config.fidelity)
SCREEN = "+screen"  # a label's suffix: the search screens the coarse shapes first (search.screening)
SCREEN_STRATEGIES = ("perfmodel" + SCREEN,)
RECHECK = "+recheck"  # a label's last suffix: the best Config.recheck proxies re-run with another seed
RECHECK_STRATEGIES = ("perfmodel" + RECHECK, "perfmodel" + SCREEN + RECHECK, CASCADE + RECHECK)
ASHA_STRATEGIES = (*(s + ASHA for s in STRATEGIES if s != "uniform"), "perfmodel" + ASHA + PROBE, CASCADE)
GRID = (0, 2, 4, 8, 16, 32)
BUDGET_RANK = 8
EVA_RHO = 2.0  # PEFT EVA's redistribution: a site may get up to rho x the budget's rank
HYDRA_GAIN = 4.7  # points over uniform that HyDRA reports: the goal


@dataclass(frozen=True)
class Config:
    tasks: tuple[str, ...] = ("tiny-vlm", "minilm")
    strategies: tuple[str, ...] = STRATEGIES
    trials: int = 32
    seeds: int = 3
    steps: int = 200
    confirm_steps: int = 1000
    confirm_seeds: int = 3
    top_k: int = 3
    rank_schedules: int = 20  # more proxy-tried schedules run at full length (1 seed), for the correlation
    adalora: bool = True
    eva: bool = True
    lr: float = 1e-3
    batch_size: int = 32
    device: str = "cpu"
    fidelity: tuple[int, int, int] | None = None  # (min steps, max steps, eta) of the +asha strategies
    budget_rank: int = BUDGET_RANK  # the budget: uniform LoRA of this rank on every site
    recheck: int = 3  # proxies a +recheck search re-runs before confirmation (spec confirm.recheck)
    resume: bool = False  # +asha promotions go on from the rung below's training state (fidelity.resume)


FULL = Config()  # the protocol
QUICK = Config(tasks=("tiny-vlm",), trials=12, seeds=1, confirm_steps=600, confirm_seeds=2, top_k=1,
               rank_schedules=4)  # fmt: skip


def has_recheck(strategy: str) -> bool:
    return strategy.endswith(RECHECK)


def searched(strategy: str) -> str:
    """The label without ``+recheck``: what the search itself runs, up to its last proxy trial."""
    return strategy.removesuffix(RECHECK)


def is_asha(strategy: str) -> bool:
    return ASHA in strategy or searched(strategy) == CASCADE


def has_probe(strategy: str) -> bool:
    return searched(strategy).endswith(PROBE) or searched(strategy) == CASCADE


def has_screen(strategy: str) -> bool:
    return searched(strategy).endswith(SCREEN)


def base_strategy(strategy: str) -> str:
    """The proposer a label runs: ``perfmodel+asha`` runs ``perfmodel`` with the config's rungs,
    ``perfmodel+asha+probe`` the same after the probe, ``perfmodel+screen`` after the shapes;
    ``cascade`` is the service's own name for rungs, probe and shapes; ``+recheck`` adds rechecks."""
    return searched(strategy).removesuffix(SCREEN).removesuffix(PROBE).removesuffix(ASHA)


def rungs(config: Config) -> Fidelity | None:
    return Fidelity(*config.fidelity) if config.fidelity else None


def probe_length(config: Config) -> int:
    """The probe's steps as the service's ``ProbeSpec`` picks them: the second rung's, else the proxy's."""
    fidelity = rungs(config)
    return config.steps if fidelity is None else fidelity.steps(min(1, fidelity.top))


def proxy_budget(config: Config) -> int:
    """The proxy training steps of one search: a plain one's trials x steps, which a +asha search
    spends at least (it proposes until its trials' steps reach it: compute-matched)."""
    return config.trials * config.steps


def trial_steps(trial: TrialRecord, config: Config) -> int:
    """The steps a proxy trial trained: its rung's in a +asha search, else ``config.steps``."""
    return trial.steps or config.steps


def trial_start(trial: TrialRecord, history: Sequence[TrialRecord], config: Config) -> int:
    """The steps a +asha promotion went on from with ``Config.resume``: its rung below's, where the
    search ran the same schedule (config number) with the same seed there, as the service's worker
    resumes; 0 for a run from scratch (a lowest rung, a recheck with its own seed, no resume)."""
    fidelity = rungs(config)
    if not config.resume or fidelity is None or trial.steps is None or trial.rung <= 0:
        return 0
    below = [t for t in history if t.number < trial.number and t.rung == trial.rung - 1
             and t.config_number == trial.config_number and t.proxy_seed == trial.proxy_seed]  # fmt: skip
    return fidelity.steps(trial.rung - 1) if below else 0


def objective(trial: TrialRecord) -> float:
    return float(trial.objective if trial.objective is not None else math.nan)


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "n": len(values), "values": list(values)}


def make_space(model: str, task: str, budget_rank: int = BUDGET_RANK) -> HierarchicalSpace:
    from ranktune.service.planning import build_space, select_towers, sites_for_search

    sites = select_towers(sites_for_search(model, task), None)
    grid = RankGrid(grid_for(budget_rank))
    return build_space(sites, budget_rank=budget_rank, budget_params=None, grid=grid)


def grid_for(budget_rank: int) -> tuple[int, ...]:
    """The bench's grid, with the budget's own rank added when it is off it (rank 1: uniform is reachable)."""
    return tuple(sorted({*GRID, budget_rank}))


def adalora_init_r(budget_rank: int) -> int:
    """AdaLoRA's starting rank: 1.5x the budget's (12 for rank 8), pruned down to the budget's."""
    return budget_rank + budget_rank // 2
