"""From a submitted spec to adapter sites and a search space, and from a stored search back to the
frozen values a proposer reads. No database access here: repositories call these.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from ranktune.search.errors import RanktuneError
from ranktune.search.grid import RankGrid
from ranktune.search.sites import AdapterSite
from ranktune.search.space import HierarchicalSpace
from ranktune.search.strategies import ModelSettings, PriorTrial, SearchContext
from ranktune.service.errors import InvalidInput
from ranktune.service.memo import JsonMemo
from ranktune.service.planning import build_space, select_towers, sites_for_search
from ranktune.service.schemas.json_bounds import STORED
from ranktune.service.schemas.spec import ObjectiveSpec, SearchCreate

log = logging.getLogger("ranktune.search")

# Where a search/ error's ``field`` lives in the spec a user submitted.
SPEC_PATHS = {
    "grid": "space.grid",
    "towers": "space.towers",
    "space": "space",
    "alpha": "space",
    "sites": "model",
    "schedule": "model",
    "vector": "space",
}

# Built-in models never change while the process runs; discovery imports torch once (seconds).
_BUILTIN_SITES: dict[str, tuple[AdapterSite, ...]] = {}
_BUILTIN_LOCK = threading.Lock()


def spec_error(error: RanktuneError) -> InvalidInput:
    """The error as a 422 on the spec field it is about.

    search/ errors start with the path of what is wrong ("budget.rank: …", "grid: …"); when that
    path begins with the error's ``field`` it is the more precise location.
    """
    field = error.field or "spec"
    prefix = str(error).split(":", 1)[0]
    path = prefix if re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", prefix) and prefix.split(".")[0] == field else field
    head, *rest = path.split(".")
    return InvalidInput(str(error), field=".".join([SPEC_PATHS.get(head, head), *rest]))


def task_metrics(model: str, task: str, max_seq_len: int | None = None) -> dict[str, str]:
    """The metrics ``task`` reports on ``model`` (default objective first) and which way is better;
    a task that does not exist or does not fit the model is a 422 on ``task`` (or ``model``), a
    ``max_seq_len`` the task cannot apply one on ``proxy.max_seq_len``."""
    from ranktune.trainer.tasks.registry import load_task  # torch stays out of the service's import path

    try:
        loaded = load_task(task, model)
        loaded.set_max_seq_len(max_seq_len)
        return dict(loaded.metric_directions())
    except RanktuneError as e:
        raise spec_error(e) from e


def check_checkpointing(model: str) -> None:
    """A model whose class cannot checkpoint its activations is a 422 on ``proxy.gradient_checkpointing``."""
    from ranktune.trainer.models import load_config
    from ranktune.trainer.runtime import check_checkpointing as check

    try:
        check(load_config(model))
    except RanktuneError as e:
        raise spec_error(e) from e


def resolve_objective(spec: SearchCreate, metrics: dict[str, str]) -> SearchCreate:
    """The spec with its objective filled in from the task: without one, the task's default metric
    and its direction; with a metric but no direction, that metric's direction. A metric the task
    does not report is a 422 on ``objective.metric`` (its trials could never succeed)."""
    given = spec.objective.model_fields_set if "objective" in spec.model_fields_set else set()
    metric = spec.objective.metric if "metric" in given else next(iter(metrics))
    if metric not in metrics:
        reported = ", ".join(f"{name} ({direction})" for name, direction in metrics.items())
        raise InvalidInput(
            f"objective.metric: {spec.task} reports {reported}; {metric!r} is not one of them",
            field="objective.metric",
        )
    direction = spec.objective.direction if "direction" in given else metrics[metric]
    objective = ObjectiveSpec(metric=metric, direction=direction)  # type: ignore[arg-type]
    return spec.model_copy(update={"objective": objective})


def discover_sites(model: str, task: str) -> tuple[AdapterSite, ...]:
    """Every adapter site of ``model`` (check the task first: ``task_metrics``); a model that cannot
    be resolved or built is a 422 on ``model``."""
    cacheable = model.startswith("builtin:")
    if cacheable and model in _BUILTIN_SITES:
        return _BUILTIN_SITES[model]
    try:
        sites = sites_for_search(model, task)
    except RanktuneError as e:
        raise spec_error(e) from e
    except (OSError, ValueError, KeyError, ImportError, RuntimeError, AttributeError) as e:
        # Building an arbitrary model from its config can fail in many ways; all of them mean the
        # model the user named is unusable, which is their input, not our bug.
        log.warning("site discovery failed for model %r", model, exc_info=True)
        raise InvalidInput(
            f"model: cannot build {model!r} to find its adapter sites ({type(e).__name__}: {e})",
            field="model",
        ) from e
    if cacheable:
        with _BUILTIN_LOCK:
            _BUILTIN_SITES[model] = sites
    return sites


def build_search_space(spec: SearchCreate, sites: tuple[AdapterSite, ...]) -> HierarchicalSpace:
    try:
        chosen = select_towers(sites, spec.space.towers)
        return build_space(
            chosen,
            budget_rank=spec.budget.rank,
            budget_params=spec.budget.params,
            grid=RankGrid(tuple(spec.space.grid)),
            layer_groups=spec.space.layer_groups,
        )
    except RanktuneError as e:
        raise spec_error(e) from e


@dataclass(frozen=True)
class PreparedSearch:
    """A validated spec (every default filled in), the model's sites and the space they span."""

    spec: SearchCreate
    sites: tuple[AdapterSite, ...]
    space: HierarchicalSpace

    def spec_json(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json")


def prepare_search(spec: SearchCreate, default_lease_ttl_s: float) -> PreparedSearch:
    """Discover sites and build the space before any row is written: a bad spec fails here."""
    if spec.lease_ttl_s is None:
        spec = spec.model_copy(update={"lease_ttl_s": default_lease_ttl_s})
    spec = resolve_objective(spec, task_metrics(spec.model, spec.task, spec.proxy.max_seq_len))
    sites = discover_sites(spec.model, spec.task)
    if spec.proxy.gradient_checkpointing:
        check_checkpointing(spec.model)
    return PreparedSearch(spec, sites, build_search_space(spec, sites))


# Every claim and every top-up reads its search back from JSON; rebuilding the space each time cost
# 1.4 ms for 54 sites (and grows with the model). The memo keeps what one JSON builds, checked by
# equality on every use, so it is always the value this JSON would build (see service/memo.py).
_STORED_SPECS: JsonMemo[SearchCreate] = JsonMemo(size=64)
_STORED_SPACES: JsonMemo[HierarchicalSpace] = JsonMemo(size=64)


def _memo_key(spec: dict[str, Any]) -> tuple[object, ...]:
    return (spec.get("name"), spec.get("model"), spec.get("task"), spec.get("strategy"))


def stored_spec(spec: dict[str, Any]) -> SearchCreate:
    """The validated spec of a stored search; shared between callers, so treat it as read-only.

    Free-form options nested too deep (rows older than the bounds) come back cut short (STORED)."""
    return _STORED_SPECS.get(_memo_key(spec), spec, lambda: SearchCreate.model_validate(spec, context=STORED))


def stored_space(spec: dict[str, Any], sites: list[Any]) -> HierarchicalSpace:
    """The search space of a stored search (immutable, shared between callers and threads)."""
    return _STORED_SPACES.get(
        (*_memo_key(spec), len(sites)),
        (spec, sites),
        lambda: build_search_space(stored_spec(spec), tuple(AdapterSite.from_json(s) for s in sites)),
    )


def search_context(
    spec: SearchCreate, space: HierarchicalSpace, prior: tuple[PriorTrial, ...] = ()
) -> SearchContext:
    model = spec.performance_model
    return SearchContext(
        space=space,
        seed=spec.proxy.seed,
        metric=spec.objective.metric,
        direction=spec.objective.direction,
        max_trials=spec.max_trials,
        model=ModelSettings(
            min_trials=model.min_trials,
            pool=model.pool,
            acquisition=model.acquisition,
            kappa=model.kappa,
            transfer=model.transfer,
        ),
        prior=prior,
        fidelity=spec.fidelity.rungs() if spec.fidelity else None,
        screen=bool(spec.screen),
    )
