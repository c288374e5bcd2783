"""Accounting of input records: every record is kept, or dropped with a counted reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl


class BadInputError(ValueError):
    """An input that cannot be read as a whole; the message names the file, the row and the problem."""


#: The columns of ``dropped.parquet``, all text.
DROPPED_COLUMNS = ("source_file", "record", "study_id", "reason", "detail")


@dataclass
class DropLog:
    """Collects dropped records; with ``strict`` the first one raises instead.

    ``reason`` is a short category that is counted (e.g. ``invalid_label``); ``detail`` says
    exactly what was wrong with that record.
    """

    strict: bool = False
    rows: list[dict[str, str | None]] = field(default_factory=list)

    def drop(self, source_file: str, record: str, study_id: str | None, reason: str, detail: str) -> None:
        if self.strict:
            raise BadInputError(f"{source_file}: {record}: {detail}")
        self.rows.append(
            {"source_file": source_file, "record": record, "study_id": study_id, "reason": reason, "detail": detail}
        )

    def frame(self) -> pl.DataFrame:
        import polars as pl  # here, so that BadInputError costs `cxrlabel label --labeler rule` no polars import

        return pl.DataFrame(self.rows, schema={name: pl.String for name in DROPPED_COLUMNS})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(row["reason"] for row in self.rows).items()))
