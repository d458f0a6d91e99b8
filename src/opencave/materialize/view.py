"""What materialization needs from the segmentation graph."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from ..segmentation.arrays import unique


class SegmentationView:
    def __init__(self, get_roots: Callable[[np.ndarray, datetime], np.ndarray],
                 delta_roots: Callable[[datetime, datetime], tuple[np.ndarray, np.ndarray]],
                 is_latest_roots: Callable[[np.ndarray, datetime], np.ndarray]):
        self.get_roots = get_roots
        self.delta_roots = delta_roots
        self.is_latest_roots = is_latest_roots

    @classmethod
    def of(cls, graph: Any) -> SegmentationView:
        return cls(
            lambda ids, ts: graph.get_roots(ids, timestamp=ts),
            lambda t0, t1: graph.delta_roots(t0, t1),
            lambda ids, ts: graph.is_latest_roots(ids, timestamp=ts),
        )


def lookup_roots(seg: SegmentationView, supervoxels: np.ndarray,
                 timestamp: datetime) -> np.ndarray:
    """Root ids at ``timestamp`` (supervoxel 0, a point outside the segmentation, has root
    0), each distinct supervoxel looked up once: many rows share one."""
    supervoxels = np.asarray(supervoxels, dtype=np.uint64)
    distinct = unique(supervoxels)
    roots = np.asarray(seg.get_roots(distinct, timestamp), dtype=np.uint64)
    return roots[np.searchsorted(distinct, supervoxels)]
