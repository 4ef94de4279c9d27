"""Trainer-side errors, part of ranktune's one hierarchy (``search.errors.RanktuneError``)."""

from ranktune.search.errors import RanktuneError


class MethodError(RanktuneError):
    """Adapter method options are invalid."""

    field = "method"


class TaskError(RanktuneError):
    """A task or its data is unusable."""

    field = "task"


class TrainingError(RanktuneError):
    """A fine-tune could not run as asked (e.g. the model does not match the schedule)."""

    field = "schedule"
