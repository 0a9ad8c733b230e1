"""kundenwert: campaign and customer analytics for CRM data.

Subpackages, in the order imports may flow: ``features`` (CRM contract, store, feature pipelines),
``datasets`` (sample world and real data in the contract format), ``models``, ``training``,
``experiments``, ``serving``.
"""

__version__ = "0.1.0"

import warnings as _warnings

# pandera imports pyspark whenever it is installed (the ``spark`` extra), and pyspark warns on
# import that it does not fully support pandas 3: every command would print that warning first,
# although kundenwert hands Spark only Arrow batches. A filter, not work: nothing is imported here.
_warnings.filterwarnings(
    "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
)
