"""One line of a user's JSONL data set: shared by the readers (``jsonl``) and the VQA encoder
(``jsonl_vqa``), so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Record:
    """One example with where it came from, so that every error can point at the line."""

    file: Path
    line: int
    data: dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.file}, line {self.line}"

    def image_path(self) -> Path:
        path = Path(self.data["image"]).expanduser()
        return path if path.is_absolute() else self.file.parent / path
