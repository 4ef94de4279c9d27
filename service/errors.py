"""The service's errors: ranktune errors that also say which HTTP status they become."""

from __future__ import annotations

from ranktune.search.errors import RanktuneError


class ServiceError(RanktuneError):
    """A request the service refuses; ``field`` names the part of the request that is wrong.

    ``where`` says which part of the HTTP request holds it (body, path, query, header); ``loc``
    overrides the location when a name itself contains dots (``metrics.val.acc``).
    """

    status_code = 400
    where = "body"

    def __init__(
        self, message: str, *, field: str | None = None, where: str | None = None, loc: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, field=field)
        if where is not None:
            self.where = where
        self.loc = loc or tuple((self.field or "body").split("."))


class InvalidInput(ServiceError):
    status_code = 422


class NotFound(ServiceError):
    status_code = 404
    where = "path"


class Conflict(ServiceError):
    """The request was well formed but the state does not allow it (e.g. a stale attempt)."""

    status_code = 409


class DatabaseError(ServiceError):
    """The database is unreachable or at the wrong schema revision."""

    status_code = 503
    field = "database"
