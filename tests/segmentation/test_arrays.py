"""Vectorized helpers and the doctests of the segmentation modules."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from opencave.segmentation.arrays import (
    canonical_labels,
    components,
    components_in_batches,
    first_occurrences,
    lookup_sorted,
    ranges,
)


def test_ranges() -> None:
    idx, owner = ranges(np.array([0, 5, 5]), np.array([2, 5, 7]))
    assert idx.tolist() == [0, 1, 5, 6] and owner.tolist() == [0, 0, 2, 2]
    assert ranges(np.array([], int), np.array([], int))[0].shape == (0,)


def test_canonical_labels_and_first_occurrences() -> None:
    labels, k = canonical_labels(np.array([5, 5, 2, 9, 2]))
    assert labels.tolist() == [0, 0, 1, 2, 1] and k == 3
    assert first_occurrences(labels, k).tolist() == [0, 2, 3]


def test_batched_components_equal_global_ones() -> None:
    rng = np.random.default_rng(0)
    # 40 blocks of 25 nodes; edges stay inside blocks, as edges stay inside chunks.
    block = rng.integers(0, 25, (400, 2)) + 25 * rng.integers(0, 40, 400)[:, None]
    a, b = block.min(axis=1), block.max(axis=1)
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    expected, k = components(1000, a, b)
    got, k2 = components_in_batches(1000, a, b, batch_nodes=60)
    assert k == k2 and np.array_equal(got, expected)


def test_lookup_sorted() -> None:
    assert lookup_sorted(np.array([2, 4, 6]), np.array([4, 5, 7, 2])).tolist() == [1, -1, -1, 0]


@pytest.mark.parametrize("module", ["ids", "arrays", "levels", "mincut", "graph", "layers"])
def test_docstring_examples(module: str) -> None:
    mod = importlib.import_module(f"opencave.segmentation.{module}")
    result = doctest.testmod(mod)
    assert result.failed == 0
