"""Deterministic, group-aware splits.

Rows that share a group (a film, a user, a document) land in one split only, so the
held-out accuracy measures generalisation to unseen groups rather than memorised ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_indices(
    n_rows: int, fractions: Sequence[float], seed: int, groups: Sequence[object] | None = None
) -> list[list[int]]:
    """Split row indices into len(fractions) + 1 parts; the last part takes the rest.

    Whole groups are dealt out in a seeded random order until each part holds at least its
    fraction of the rows. Indices inside a part stay in file order.
    """
    keys = list(range(n_rows)) if groups is None else list(groups)
    members: dict[object, list[int]] = {}
    for index, key in enumerate(keys):
        members.setdefault(key, []).append(index)
    order = np.random.default_rng(seed).permutation(len(members))
    unique = list(members)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    targets = [f * n_rows for f in fractions]
    part = 0
    for position in order:
        while part < len(targets) and len(parts[part]) >= targets[part]:
            part += 1
        parts[part].extend(members[unique[position]])
    return [sorted(p) for p in parts]
