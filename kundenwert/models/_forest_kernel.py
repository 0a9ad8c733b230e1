"""The compiled loop of ``forest`` (imports numba, so it is imported only when a pass runs)."""

from __future__ import annotations

import numba
import numpy as np

BLOCK = 32  # rows walked through one tree together (their walks interleave)


def _compiled(f):
    """``f`` compiled, cached on disk beside the package (or in numba's user cache); compiled
    anew in each process where neither can be written."""
    try:
        return numba.njit(nogil=True, cache=True)(f)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(f)


@_compiled
def walk(
    Z, feature, threshold, missing_left, left, value, root, depth, slot, init, terms, out
):  # pragma: no cover
    """Per block of rows of ``Z``: each slot from its ``init``; each tree (in order) walked
    ``depth`` steps from its ``root`` by every row of the block (right when neither
    ``x <= threshold`` nor a missing value going left), its leaf's value added into the tree's
    ``slot``; output o the sum of its ``terms``' slots, in order."""
    n_slots = init.shape[0]
    acc = np.empty((BLOCK, n_slots))
    node = np.empty(BLOCK, dtype=np.int32)
    n = Z.shape[0]
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        for r in range(m):
            for s in range(n_slots):
                acc[r, s] = init[s]
        for t in range(root.shape[0]):
            at = slot[t]
            for r in range(m):
                node[r] = root[t]
            for _ in range(depth[t]):
                for r in range(m):
                    nd = node[r]
                    x = Z[start + r, feature[nd]]
                    go_left = (x <= threshold[nd]) | ((x != x) & missing_left[nd])
                    node[r] = left[nd] + np.int32(not go_left)
            for r in range(m):
                acc[r, at] += value[node[r]]
        for r in range(m):
            for o in range(terms.shape[0]):
                v = acc[r, terms[o, 0]]
                for k in range(1, terms.shape[1]):
                    s = terms[o, k]
                    if s < 0:
                        break
                    v += acc[r, s]
                out[start + r, o] = v
