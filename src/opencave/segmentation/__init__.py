"""The versioned segmentation graph: supervoxels grouped into roots, changed over time by
merges, splits, undos and redos, answerable "as of" any timestamp (a local PyChunkedGraph).

See ``docs/segmentation.md`` for the model, the storage layout and the costs.
"""

from .graph import SegmentationGraph
from .ids import ChunkGeometry, IdLayout
from .operation import Operation

__all__ = ["ChunkGeometry", "IdLayout", "Operation", "SegmentationGraph"]
