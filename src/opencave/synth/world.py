"""The synthetic ``minnie65_public``: every number it is calibrated on, in one place.

Real minnie65 figures come from the MICrONS tutorials (``../shared/seeds``) and DESIGN.md §6;
the synthetic datastack at scale s = synapses / 337,312,429 keeps the proportions.
"""

from __future__ import annotations

from datetime import UTC, datetime

DATASTACK = "minnie65_public"
ALIGNED_VOLUME = "minnie65_phase3"
SEGMENTATION_TABLE = "minnie3_v1"
DESCRIPTION = "This is the publicly released version of the minnie65 volume and segmentation. "

#: Annotation voxels (nm) and the volume's extent in them.
VOXEL_RESOLUTION = (4.0, 4.0, 40.0)
BOUNDS_MIN = (63_936, 77_280, 15_368)
BOUNDS_MAX = (392_736, 279_152, 27_361)

#: The chunkedgraph's grid: base voxels of 8×8×40 nm, layer-1 chunks of 256×256×512 of them.
GRAPH_RESOLUTION = (8.0, 8.0, 40.0)
CHUNK_SIZE = (256, 256, 512)
GRAPH_OFFSET = (BOUNDS_MIN[0] // 2, BOUNDS_MIN[1] // 2, BOUNDS_MIN[2])
N_LAYERS = 12
SPATIAL_BITS = 10

REAL_SYNAPSES = 337_312_429
REAL_NUCLEI = 144_120

#: When the segmentation graph starts (before every annotation of the volume).
GRAPH_CREATED = datetime(2020, 6, 1, tzinfo=UTC)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


#: The public versions and their timestamps (seeds 000/001/003). 1412 is not in the seeds;
#: its timestamp is chosen on the same 10:10 UTC schedule.
VERSIONS: tuple[tuple[int, datetime], ...] = (
    (117, _ts("2021-06-11T08:10:00.215114")),
    (343, _ts("2022-02-24T08:10:00.184668")),
    (661, _ts("2023-04-06T20:17:09.199182")),
    (795, _ts("2023-08-23T08:10:01.404268")),
    (943, _ts("2024-01-22T08:10:01.497934")),
    (1078, _ts("2024-06-05T10:10:01.203215")),
    (1181, _ts("2024-09-16T10:10:01.121167")),
    (1300, _ts("2025-01-13T10:10:01.286229")),
    (1412, _ts("2025-04-14T10:10:01.160305")),
    (1507, _ts("2025-07-31T08:10:01.117494")),
    (1621, _ts("2025-11-25T08:10:01.094430")),
    (1718, _ts("2026-03-07T08:10:01.190228")),
)

#: Nucleus detections: neurons, glia, and detections with no segment (root id 0).
NUCLEUS_KINDS = {"neuron": 0.497, "glia": 0.130, "none": 0.373}

#: aibs_metamodel_celltypes_v661 counts (seed 003), by classification system.
EXCITATORY_TYPES = {"23P": 19643, "4P": 14722, "6P-IT": 11637, "5P-IT": 7889, "6P-CT": 6755,
                    "5P-ET": 2158, "5P-NP": 957}
INHIBITORY_TYPES = {"BC": 3310, "MC": 2434, "BPC": 1484, "NGC": 621}
GLIA_TYPES = {"astrocyte": 7108, "oligo": 6900, "microglia": 2394, "OPC": 1449, "pericyte": 846}
#: Cortical layer of each excitatory type, as a band of normalized depth (y).
LAYER_BANDS = {"23P": (0.10, 0.35), "4P": (0.35, 0.50), "5P-IT": (0.50, 0.70),
               "5P-ET": (0.50, 0.70), "5P-NP": (0.50, 0.70), "6P-IT": (0.70, 0.98),
               "6P-CT": (0.70, 0.98)}
#: Morphological types (aibs_metamodel_mtypes_v661_v2) per coarse type.
MTYPES = {"23P": ("L2a", "L2b", "L2c", "L3a", "L3b"), "4P": ("L4a", "L4b", "L4c"),
          "5P-IT": ("L5a", "L5b"), "5P-ET": ("L5ET",), "5P-NP": ("L5NP",),
          "6P-IT": ("L6short-a", "L6short-b", "L6tall-a"), "6P-CT": ("L6tall-b", "L6tall-c",
                                                                      "L6wm"),
          "BC": ("PTC",), "MC": ("DTC",), "BPC": ("STC",), "NGC": ("ITC",)}

#: proofreading_status_and_strategy: proofread axons at v1181 and v1718 (DESIGN §6), and
#: the axon strategies at v1181 (seed 003) plus rows with no axon proofreading ("none").
PROOFREAD_V1181 = 1436
PROOFREAD_V1718 = 2275
AXON_STRATEGIES = {"axon_partially_extended": 979, "axon_column_truncated": 233,
                   "axon_interareal": 144, "axon_fully_extended": 80}
AXON_NONE_FRACTION = 185 / 1621
DENDRITE_STRATEGIES = {"dendrite_extended": 0.6, "dendrite_clean": 0.4}

#: Synapse graph: who is pre and post (the rest are orphan fragments), autapses.
POST_ON_NEURON = 0.92
PRE_ON_NEURON = 0.30
AUTAPSE = 0.005
#: Heavy tails of in/out degree (lognormal sigma), and how much proofread (extended) axons
#: out-weigh others.
DEGREE_SIGMA = 1.0
PROOFREAD_OUTPUT_BOOST = 3.0
#: Spread of a neuron's synapses around its soma (voxels) and of pre around post.
DENDRITE_SPREAD = (25_000.0, 25_000.0, 2_500.0)
CLEFT_OFFSET = (60.0, 60.0, 2.0)
#: Orphan fragments per layer-1 chunk, and synapse endpoints per supervoxel.
FRAGMENTS_PER_CHUNK = 16
ENDPOINTS_PER_SUPERVOXEL = 3

#: Proofreading edits between consecutive versions, as a fraction of neurons.
EDITS_PER_WINDOW = 0.01
MIN_EDITS_PER_WINDOW = 12
#: False merges present when the graph starts, split later: neuron + fragment, neuron + neuron.
FALSE_MERGES = 0.02
MULTI_SOMA = 0.01
