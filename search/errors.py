"""The package's own small exception hierarchy.

Every user-facing error names the field or thing that is wrong and what to do about it; the CLI
prints ``str(error)`` as one line and the service maps these errors to 4xx answers.
"""


class RanktuneError(Exception):
    """Base class of every error ranktune raises on purpose."""

    field: str | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        if field is not None:
            self.field = field


class SiteError(RanktuneError):
    """A model, a module name or a site list is unusable."""

    field = "model"


class GridError(RanktuneError):
    """A rank grid is invalid."""

    field = "grid"


class BudgetError(RanktuneError):
    """A parameter budget is invalid or cannot be met on the grid."""

    field = "budget"


class ScheduleError(RanktuneError):
    """A rank schedule is malformed or does not fit its sites."""

    field = "schedule"
