"""The database layer under everything that persists: one ``MetaData`` for every table
(``schema``), one class per backend (``backends``), driver errors turned into ours
(``errors.map_exceptions``) and Alembic migrations (``migrate``, ``migrations/``).

It may import ``kundenwert.errors``, ``kundenwert.settings`` and ``kundenwert.features.contract``
(the column definitions), never serving, training, experiments or models.
"""
