"""Chance-corrected agreement between judges: Cohen's kappa (two raters) and Fleiss' kappa (many).

Written here rather than taken from scikit-learn so that ensembles can report agreement
without importing it, and so Fleiss' kappa (absent from scikit-learn) shares one convention.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same items; None when it is undefined (no items).

    When both raters use a single identical label everywhere, the expected agreement is 1
    and kappa is defined as 1.0 (perfect, if uninformative, agreement).
    """
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    if expected == 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def fleiss_counts(ratings: Sequence[Sequence[Hashable]]) -> tuple[list[list[int]], list[Hashable]]:
    """Turn per-item label lists (one label per rater) into the item x category count table."""
    categories = sorted({r for item in ratings for r in item}, key=repr)
    index = {c: i for i, c in enumerate(categories)}
    table = []
    for item in ratings:
        row = [0] * len(categories)
        for r in item:
            row[index[r]] += 1
        table.append(row)
    return table, categories


def fleiss_kappa_table(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from an item x category table of counts; every item needs the same rater count."""
    if not table:
        return None
    raters = sum(table[0])
    if raters < 2 or any(sum(row) != raters for row in table):
        raise ValueError("every item needs the same number (at least 2) of ratings")
    n_items = len(table)
    k = len(table[0])
    p_j = [sum(row[j] for row in table) / (n_items * raters) for j in range(k)]
    p_i = [(sum(c * c for c in row) - raters) / (raters * (raters - 1)) for row in table]
    p_bar = sum(p_i) / n_items
    p_e = sum(p * p for p in p_j)
    if p_e == 1.0:
        return 1.0
    return (p_bar - p_e) / (1.0 - p_e)


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa from per-item label lists (each item rated by the same number of raters)."""
    table, _ = fleiss_counts(ratings)
    return fleiss_kappa_table(table)


def agreement(columns: dict[str, Sequence[Hashable]]) -> dict[str, object]:
    """Kappa for a set of judges' labels over the same items: Cohen's for two, Fleiss' for more."""
    names = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    if len(names) < 2:
        return {"method": None, "kappa": None, "items": n}
    if len(names) == 2:
        kappa = cohen_kappa(columns[names[0]], columns[names[1]])
        method = "cohen"
    else:
        rows = [[columns[j][i] for j in names] for i in range(n)]
        kappa = fleiss_kappa(rows)
        method = "fleiss"
    return {"method": method, "kappa": None if kappa is None else round(kappa, 6), "items": n}
