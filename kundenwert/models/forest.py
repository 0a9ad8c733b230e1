"""Fitted HistGradientBoosting trees as flat arrays, walked by one compiled loop per row.

scikit-learn predicts tree by tree: each of a model's 200-300 trees takes a pass over every row
(its Python loop, an output array per tree, the rows read again from memory each time), and
its fast path needs the rows binned first (one binning per booster: a large share of a batch
run). Here every tree of a model is walked for one row before the next row, on the encoded
values themselves (``x <= threshold``, missing values as the node says: the rule of
scikit-learn's own raw-value predictor, and the same leaves as the binned path, since a node's
threshold is its bin's upper edge), in one numba-compiled loop. The raw score of a row starts
at the booster's baseline and adds the trees in their order, as scikit-learn does, so the
numbers are bitwise the same (tests hold them equal).

Each tree adds into one of several sums (``slot``), and each output is a sum of slots: one
pass then scores several boosters fitted on the same encoding (one slot each), or the response
model for every (action, channel, arm) of the catalog at once (``pair_raw``): its trees are
specialised to each value of the contact columns they split on (the splits on those columns
resolved, so a tree that never reads them is walked once per customer, one that reads only
``treated`` twice), and the score of a pair is the sum of the slots of its values.

numba is what shap already brings; it compiles on first use (cached on disk after). Small
inputs (the API's few customers) take scikit-learn's path: compiling would cost more.
"""

from __future__ import annotations

import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

# below this many rows scikit-learn's own path is used (no compilation, no numba import)
MIN_ROWS = 5_000
# rows per task of the thread pool
CHUNK = 8_192


def use_for(booster, n_rows: int) -> bool:
    """Whether to score ``n_rows`` rows of ``booster`` here rather than with scikit-learn:
    enough rows, a booster ``supported``, and not switched off (``KUNDENWERT_COMPILED_TREES=0``:
    scikit-learn's path everywhere, e.g. to measure against it)."""
    if n_rows < MIN_ROWS or os.environ.get("KUNDENWERT_COMPILED_TREES", "1") == "0":
        return False
    return supported(booster) and _compiles()


_USABLE: list[bool] = []


def _compiles() -> bool:
    """Whether numba imports here (else scikit-learn's path, as before)."""
    if not _USABLE:
        try:
            _kernel()
            _USABLE.append(True)
        except ImportError:
            _USABLE.append(False)
    return _USABLE[0]


@dataclass(frozen=True)
class Flat:
    """Trees as arrays: per node ``feature``, ``threshold``, ``missing_left`` and ``left`` (the
    left child's number; the right child is the next node) and ``value`` (a leaf's). A leaf is
    its own left child with an infinite threshold and missing values going left, so that every
    walk takes a fixed number of steps (``depth``, the tree's deepest leaf) and a walk that
    reaches a leaf early stays there: no branch on where a walk ends, and the walks of several
    rows through one tree interleave. Per tree its ``root``, ``depth`` and the ``slot`` it adds
    into; per slot its ``init`` value (a booster's baseline); per output the slots it sums
    (``terms``, -1 padded), in order."""

    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    value: np.ndarray
    root: np.ndarray
    depth: np.ndarray
    slot: np.ndarray
    init: np.ndarray
    terms: np.ndarray


class _Builder:
    def __init__(self) -> None:
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.missing_left: list[int] = []
        self.left: list[int] = []
        self.value: list[float] = []
        self.root: list[int] = []
        self.depth: list[int] = []
        self.slot: list[int] = []

    def add(self, nodes: np.ndarray, slot: int, fixed: dict[int, float] | None = None) -> None:
        """Append one tree (a scikit-learn predictor's ``nodes``) adding into ``slot``; the splits
        on the features of ``fixed`` ({feature: encoded value}) are resolved for that value."""
        feature = nodes["feature_idx"].tolist()
        leaf = nodes["is_leaf"].tolist()
        thr = nodes["num_threshold"].tolist()
        miss = nodes["missing_go_to_left"].tolist()
        lft, rgt = nodes["left"].tolist(), nodes["right"].tolist()
        val = nodes["value"].tolist()

        def resolve(i: int) -> int:
            while fixed and not leaf[i] and feature[i] in fixed:
                x = fixed[feature[i]]
                go_left = bool(miss[i]) if np.isnan(x) else x <= thr[i]
                i = lft[i] if go_left else rgt[i]
            return i

        def alloc(k: int) -> int:
            at = len(self.feature)
            self.feature.extend([0] * k)
            self.left.extend(range(at, at + k))  # a leaf: its own child
            self.missing_left.extend([1] * k)
            self.threshold.extend([np.inf] * k)
            self.value.extend([0.0] * k)
            return at

        def place(i: int, at: int, depth: int) -> int:
            """Node i (its fixed splits resolved) at ``at``, its children side by side after it;
            the depth of its deepest leaf."""
            i = resolve(i)
            if leaf[i]:
                self.value[at] = val[i]
                return depth
            self.feature[at], self.threshold[at], self.missing_left[at] = feature[i], thr[i], miss[i]
            children = alloc(2)
            self.left[at] = children
            return max(place(lft[i], children, depth + 1), place(rgt[i], children + 1, depth + 1))

        root = alloc(1)
        self.depth.append(place(0, root, 0))
        self.root.append(root)
        self.slot.append(slot)

    def build(self, init: list[float], terms: list[list[int]]) -> Flat:
        width = max(len(t) for t in terms)
        padded = np.full((len(terms), width), -1, dtype=np.int32)
        for o, t in enumerate(terms):
            padded[o, : len(t)] = t
        return Flat(
            feature=np.asarray(self.feature, dtype=np.int32),
            threshold=np.asarray(self.threshold, dtype=np.float64),
            missing_left=np.asarray(self.missing_left, dtype=np.bool_),
            left=np.asarray(self.left, dtype=np.int32),
            value=np.asarray(self.value, dtype=np.float64),
            root=np.asarray(self.root, dtype=np.int32),
            depth=np.asarray(self.depth, dtype=np.int32),
            slot=np.asarray(self.slot, dtype=np.int32),
            init=np.asarray(init, dtype=np.float64),
            terms=padded,
        )


_FLAT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SUPPORTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def supported(booster) -> bool:
    """Whether ``booster`` (a fitted HistGradientBoosting model) can be flattened: one tree per
    iteration (a regressor or a binary classifier) and no categorical splits."""
    known = _SUPPORTED.get(booster)
    if known is None:
        predictors = getattr(booster, "_predictors", None) or []
        known = bool(predictors) and all(len(it) == 1 for it in predictors)
        known = known and not any(it[0].nodes["is_categorical"].any() for it in predictors)
        _SUPPORTED[booster] = known
    return known


def flatten(boosters: list) -> Flat:
    """The trees of ``boosters`` in one ``Flat``: booster k adds into slot k (from its baseline)
    and is output k."""
    b = _Builder()
    for k, booster in enumerate(boosters):
        for it in booster._predictors:
            b.add(it[0].nodes, k)
    init = [float(np.asarray(booster._baseline_prediction).ravel()[0]) for booster in boosters]
    return b.build(init, [[k] for k in range(len(boosters))])


def _flat_of(booster) -> Flat:
    flat = _FLAT.get(booster)
    if flat is None:
        flat = _FLAT[booster] = flatten([booster])
    return flat


def raw(booster, Z: np.ndarray) -> np.ndarray:
    """The raw predictions (log-odds, or the regressor's before its link) of encoded rows ``Z``,
    shape (n,): bitwise those of scikit-learn's ``_raw_predict``."""
    return predict(_flat_of(booster), Z)[:, 0]


_MANY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def raws(boosters: list, Z: np.ndarray) -> np.ndarray:
    """``raw`` of several boosters on the same encoded rows in one pass, shape (n, boosters)."""
    which = tuple(id(b) for b in boosters)  # no references: the cache keeps no model alive
    known = _MANY.get(boosters[0])
    if known is None or known[0] != which:
        known = _MANY[boosters[0]] = (which, flatten(boosters))
    return predict(known[1], Z)


_PAIRS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pair_flat(booster, varying: list[int], values: np.ndarray) -> Flat:
    """``_pair_flat``, kept per booster for the same ``varying`` and ``values``."""
    known = _PAIRS.setdefault(booster, {})
    key = (tuple(varying), np.asarray(values, dtype=np.float64).tobytes(), len(values))
    if key not in known:
        known.clear()  # one catalog at a time
        known[key] = _pair_flat(booster, varying, np.asarray(values, dtype=np.float64))
    return known[key]


def _pair_flat(booster, varying: list[int], values: np.ndarray) -> Flat:
    """``booster``'s trees for each row of ``values`` (the encoded values of the ``varying``
    feature columns, e.g. action, channel and arm: one row per combination scored): output c is
    the raw score with ``varying`` set to ``values[c]``. Trees are grouped by which of the
    varying columns they split on; a group's trees are specialised once per distinct value of
    those columns, into a slot of their own; the first slot (the trees splitting on none of
    them) starts at the baseline."""
    groups: dict[tuple[int, ...], list[np.ndarray]] = {}
    for it in booster._predictors:
        nodes = it[0].nodes
        inner = nodes["feature_idx"][nodes["is_leaf"] == 0]
        used = tuple(j for j, f in enumerate(varying) if (inner == f).any())
        groups.setdefault(used, []).append(nodes)
    groups.setdefault((), [])
    b = _Builder()
    slots: dict[tuple, int] = {}
    order = [(), *(g for g in groups if g)]

    def key(used: tuple[int, ...], c: int) -> tuple:  # missing (unknown) values are one value
        return (used, *(None if np.isnan(values[c, j]) else float(values[c, j]) for j in used))

    for used in order:  # the customer part first: its slot holds the baseline
        for c in range(len(values)):
            if key(used, c) in slots:
                continue
            slots[key(used, c)] = slot = len(slots)
            fixed = {varying[j]: float(values[c, j]) for j in used}
            for nodes in groups[used]:
                b.add(nodes, slot, fixed)
    init = [0.0] * len(slots)
    init[0] = float(np.asarray(booster._baseline_prediction).ravel()[0])
    terms = [[slots[key(used, c)] for used in order] for c in range(len(values))]
    return b.build(init, terms)


def n_threads() -> int:
    """Threads for a pass: as many as scikit-learn's OpenMP would take (``OMP_NUM_THREADS``,
    threadpoolctl limits)."""
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    return max(1, int(_openmp_effective_n_threads()))


def predict(flat: Flat, Z: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Every output of ``flat`` for encoded rows ``Z`` (float64, n x features), shape (n, outputs)."""
    Z = np.ascontiguousarray(Z, dtype=np.float64)
    out = np.empty((Z.shape[0], flat.terms.shape[0]), dtype=np.float64)
    kernel = _kernel()
    args = (
        flat.feature,
        flat.threshold,
        flat.missing_left,
        flat.left,
        flat.value,
        flat.root,
        flat.depth,
        flat.slot,
        flat.init,
        flat.terms,
    )
    threads = n_threads() if threads is None else threads
    starts = range(0, Z.shape[0], CHUNK)
    if threads <= 1 or len(starts) <= 1:
        kernel(Z, *args, out)
        return out
    with ThreadPoolExecutor(threads) as pool:  # the kernel releases the GIL
        list(pool.map(lambda s: kernel(Z[s : s + CHUNK], *args, out[s : s + CHUNK]), starts))
    return out


def _kernel():
    from kundenwert.models._forest_kernel import walk  # imports numba: only when used

    return walk
