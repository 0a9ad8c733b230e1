"""kundenwert: campaign and customer analytics for CRM data.

Subpackages, in the order imports may flow: ``features`` (CRM contract, store, feature pipelines),
``datasets`` (sample world and real data in the contract format), ``models``, ``training``,
``experiments``, ``serving``.
"""

__version__ = "0.1.0"
