"""Sample-world variants (``kundenwert sample --max-calls/--no-purchases/--experiment/--no-control``)
and the guarantee that the default world does not move."""

from __future__ import annotations

import hashlib
from pathlib import Path

from kundenwert.datasets.sample import generate_world, write_world

# sha256 (first 20 hex digits) of every file of the default world generate_world(1500, seed=5),
# written as CSV. Obtained on main at 3d4e10c, before the variants existed:
#   PYTHONPATH=/work/main python -c "..."  (write_world(generate_world(1500, 5), d, 'csv'), then
#   hashlib.sha256(file bytes); the truth frame hashed as world.truth.to_csv(index=False)).
# A change here means the default world of a seed changed: every stored sample world, benchmark
# and tolerance calibrated on one would silently move. Do not update these without saying why.
DEFAULT_WORLD_1500_SEED_5 = {
    "customers": "ab5f3a747e2a70eb0bc0",
    "products": "1e7032c7da61eaee5551",
    "purchases": "1f94103308df1e4b3209",
    "contacts": "f1b6d695f07774a22ce9",
    "consents": "74a8d22641e6642d8f1b",
    "complaints": "24e53100cf90dd13f9f2",
    "offers": "b585880616e4955acd2d",
    "truth/age_group_category": "34c9329372514a92b010",
}
DEFAULT_TRUTH_1500_SEED_5 = "efec2fcad572fed19c8a"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def test_default_world_is_byte_identical_to_main(tmp_path: Path) -> None:
    world = generate_world(1500, 5)
    write_world(world, tmp_path, "csv")
    got = {name: _sha((tmp_path / f"{name}.csv").read_bytes()) for name in DEFAULT_WORLD_1500_SEED_5}
    assert got == DEFAULT_WORLD_1500_SEED_5
    assert _sha(world.truth.to_csv(index=False).encode()) == DEFAULT_TRUTH_1500_SEED_5
