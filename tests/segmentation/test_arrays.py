"""Vectorized helpers and the doctests of the segmentation modules."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from opencave.segmentation.arrays import (
    canonical_labels,
    components,
    first_occurrences,
    lookup_sorted,
    ranges,
    unique,
)


def test_ranges() -> None:
    idx, owner = ranges(np.array([0, 5, 5]), np.array([2, 5, 7]))
    assert idx.tolist() == [0, 1, 5, 6] and owner.tolist() == [0, 0, 2, 2]
    assert ranges(np.array([], int), np.array([], int))[0].shape == (0,)


def test_canonical_labels_and_first_occurrences() -> None:
    labels, k = canonical_labels(np.array([5, 5, 2, 9, 2]))
    assert labels.tolist() == [0, 0, 1, 2, 1] and k == 3
    assert first_occurrences(labels, k).tolist() == [0, 2, 3]


def test_components_are_canonical() -> None:
    labels, k = components(6, np.array([4, 1]), np.array([5, 3]))
    assert labels.tolist() == [0, 1, 2, 1, 3, 3] and k == 4


def test_unique() -> None:
    values = np.random.default_rng(0).integers(0, 50, 500).astype(np.uint64)
    assert np.array_equal(unique(values), np.unique(values))
    assert unique(np.zeros(0, np.uint64)).shape == (0,)


def test_lookup_sorted() -> None:
    assert lookup_sorted(np.array([2, 4, 6]), np.array([4, 5, 7, 2])).tolist() == [1, -1, -1, 0]


@pytest.mark.parametrize(
    "module", ["ids", "arrays", "base", "levels", "mincut", "graph", "layers", "npyfile", "buckets"]
)
def test_docstring_examples(module: str) -> None:
    mod = importlib.import_module(f"opencave.segmentation.{module}")
    result = doctest.testmod(mod)
    assert result.failed == 0
