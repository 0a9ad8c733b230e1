"""Exception classes of kundenwert, all under one base.

Each error says what is wrong, where, and how to fix it. ``http_status`` lets the API map every
error to a 4xx answer in one place; ``exit_code`` is what the CLI exits with.
"""

from __future__ import annotations

from dataclasses import dataclass


class KundenwertError(Exception):
    """Base class: an error the user can fix (bad input, bad configuration, conflicting data)."""

    http_status: int = 400
    exit_code: int = 2


class ConfigurationError(KundenwertError):
    """A setting, option or configuration file is invalid."""


class InputFileError(KundenwertError):
    """An input folder or file cannot be used at all (missing, unreadable, wrong format)."""


@dataclass(frozen=True)
class ContractIssue:
    """One broken rule of the CRM data contract.

    ``row`` is the 1-based data row (row 1 is the first row after the header); ``None`` when the
    problem concerns the whole file or its header. ``column`` is ``None`` for row-level problems.
    """

    table: str
    row: int | None
    column: str | None
    value: str | None
    rule: str

    def __str__(self) -> str:
        where = f"table {self.table}"
        where += f", row {self.row}" if self.row is not None else ", header/file"
        if self.column is not None:
            where += f", column {self.column}"
        shown = ""
        if self.value is not None:
            v = self.value if len(self.value) <= 60 else self.value[:57] + "..."
            shown = f", value {v!r}"
        return f"{where}{shown}: {self.rule}"


class ContractViolation(KundenwertError):
    """Input rows break the CRM data contract; nothing was written."""

    http_status = 422
    max_listed = 20
    headline = "break the CRM data contract"

    def __init__(self, issues: list[ContractIssue]) -> None:
        self.issues = issues
        super().__init__(self._render())

    def _render(self) -> str:
        n = len(self.issues)
        lines = [f"{n} problem{'s' if n != 1 else ''}: input rows {self.headline}; nothing was written:"]
        lines += [f"  - {i}" for i in self.issues[: self.max_listed]]
        if n > self.max_listed:
            lines.append(f"  ... and {n - self.max_listed} more")
        return "\n".join(lines)


class ImportConflict(ContractViolation):
    """The import would clash with what the store already holds (append with existing ids)."""

    http_status = 409
    headline = "clash with rows already in the store"


class ErasedCustomers(ImportConflict):
    """The import names customers erased under GDPR Art. 17 (their keyed hashes are registered)."""

    headline = "name customers who were erased"


class StoreError(KundenwertError):
    """The database cannot be reached or is not in the expected state."""

    http_status = 503


class StoreUnavailable(StoreError):
    """The database is locked by another writer, unreachable or refused the connection: retry later."""


class StoreOutdated(StoreError):
    """The store's schema is older (or newer) than this version of kundenwert; the message says
    which command brings it up to date."""


class StoreConflict(StoreError):
    """The database refused rows that clash with rows it holds (a unique or foreign key)."""

    http_status = 409


class StoreDataError(StoreError):
    """The database refused a value (too long, out of range, wrong type for its column)."""

    http_status = 422


class EngineUnavailable(KundenwertError):
    """An optional engine (Spark) or what it runs on (pyspark, Java 17+) is not installed; the
    message says what to install."""


class ModelFitError(KundenwertError):
    """A model cannot be fitted on this data; the message names the cause and the remedy."""
