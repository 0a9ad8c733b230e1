"""What the feature layer needs of a store, as protocols.

The database layer (``kundenwert.db``) sits above the data contract: it builds its tables from
it. So features never import it; the import writes through an ``ImportTarget`` and the summary
and snapshots read through a ``StoreReader``, both of which ``kundenwert.db.store.Store`` is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import pandas as pd

if TYPE_CHECKING:  # features' own module; no cycle at run time
    from kundenwert.features.validate import ValidTable


class StoreReader(Protocol):
    """Typed contract tables out of a store."""

    def counts(self) -> dict[str, int]: ...

    def read_table(
        self,
        name: str,
        columns: Sequence[str] | None = None,
        *,
        attributes: bool = True,
        ordered: bool = True,
    ) -> pd.DataFrame: ...

    def read_tables(
        self,
        names: list[str] | tuple[str, ...],
        columns: Mapping[str, Sequence[str]] | None = None,
        *,
        ordered: bool = True,
    ) -> dict[str, pd.DataFrame]: ...


class ImportTarget(Protocol):
    """What validating an import must know of the store, and the all-or-nothing write."""

    def is_empty(self) -> bool: ...

    def customer_created(self) -> pd.Series: ...

    def product_categories(self) -> pd.Series: ...

    def attribute_kinds(self) -> dict[str, str]: ...

    def first_purchase(self, customer_ids: pd.Series) -> pd.Series: ...

    def clashing_keys(self, name: str, frame: pd.DataFrame) -> pd.Index: ...

    def write(
        self, tables: dict[str, ValidTable], mode: str, *, allow_erased: bool = False
    ) -> dict[str, int]: ...
