"""Packaged defaults: the default experiment (``experiment.toml``) and action catalog
(``actions.toml``). They ship inside the wheel and are read with ``importlib.resources``, so an
installed ``kundenwert`` finds them wherever it runs; ``--config`` / ``--actions`` (and
``KUNDENWERT_ACTIONS``) point at a file of the same shape instead."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def default_file(name: str) -> Traversable:
    """The packaged default file ``name`` (``experiment.toml`` or ``actions.toml``)."""
    return files(__name__) / name
