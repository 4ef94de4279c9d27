"""Pure rank-schedule logic: sites, schedules, budgets, the search space and PEFT formats.

Nothing in this package imports torch, the database or the service: it works on frozen values.
"""

from ranktune.search.errors import BudgetError, GridError, RanktuneError, ScheduleError, SiteError
from ranktune.search.grid import DEFAULT_GRID, RankGrid
from ranktune.search.schedule import AlphaRule, Budget, RankSchedule
from ranktune.search.sites import AdapterSite

__all__ = [
    "DEFAULT_GRID",
    "AdapterSite",
    "AlphaRule",
    "Budget",
    "BudgetError",
    "GridError",
    "RankGrid",
    "RankSchedule",
    "RanktuneError",
    "ScheduleError",
    "SiteError",
]
