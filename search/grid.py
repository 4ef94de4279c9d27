"""The rank grid: the ranks a site may take."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ranktune.search.errors import GridError

DEFAULT_GRID: tuple[int, ...] = (0, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64)


@dataclass(frozen=True)
class RankGrid:
    """A sorted set of allowed ranks; it always contains 0 (no adapter on that site)."""

    values: tuple[int, ...] = DEFAULT_GRID

    def __post_init__(self) -> None:
        values = self.values
        if not values:
            raise GridError("grid: must list at least one positive rank, e.g. 0,2,4,8,16")
        if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
            raise GridError(f"grid: ranks must be whole numbers, got {list(values)}")
        if any(v < 0 for v in values):
            raise GridError(f"grid: ranks must be >= 0, got {list(values)}")
        if len(set(values)) != len(values):
            raise GridError(f"grid: ranks must not repeat, got {list(values)}")
        if max(values) == 0:
            raise GridError("grid: must contain at least one positive rank")
        object.__setattr__(self, "values", tuple(sorted({0, *values})))

    @classmethod
    def parse(cls, text: str | Iterable[int]) -> RankGrid:
        """Build a grid from ``"0,2,4,8"`` or an iterable of ints."""
        if isinstance(text, str):
            parts = [p.strip() for p in text.split(",") if p.strip()]
            try:
                values = tuple(int(p) for p in parts)
            except ValueError:
                raise GridError(f"grid: expected comma-separated whole numbers, got {text!r}") from None
            return cls(values)
        return cls(tuple(text))

    def largest_at_most(self, limit: int) -> int:
        """The largest grid rank not above ``limit`` (0 when none is)."""
        best = 0
        for value in self.values:
            if value <= limit:
                best = value
        return best

    def __contains__(self, rank: object) -> bool:
        return rank in self.values

    def __str__(self) -> str:
        return ",".join(str(v) for v in self.values)
