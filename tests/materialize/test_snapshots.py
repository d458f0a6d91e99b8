"""Snapshots round-trip through JSON, including those written before mask chains."""

from opencave.materialize.snapshots import Mask, SnapshotPart, TableSnapshot
from opencave.storage.segments import Segment

SEGMENT = {"path": "tables/v/t/delta.parquet", "num_rows": 10, "sort_key": "id",
           "roots_at": 5}


def test_a_snapshot_round_trips():
    part = SnapshotPart(Segment.from_json(SEGMENT), (Mask("m1", 2, ("id",)), Mask("m2", 1)))
    snapshot = TableSnapshot("t", 7, (part, SnapshotPart(part.segment)), 17, ("bulk",))
    assert TableSnapshot.from_json(snapshot.to_json()) == snapshot
    assert part.masked_count == 3


def test_a_part_written_with_one_mask_reads_as_a_chain_of_one():
    legacy = {"segment": SEGMENT, "masked": "versions/x/1/t-mask.parquet", "masked_count": 4,
              "mask_keys": ["pre_pt_root_id"]}
    part = SnapshotPart.from_json(legacy)
    assert part.masks == (Mask("versions/x/1/t-mask.parquet", 4, ("pre_pt_root_id",)),)
    unmasked = SnapshotPart.from_json({"segment": SEGMENT, "masked": None, "masked_count": 0})
    assert unmasked.masks == ()


def test_a_snapshot_written_before_compaction_accounts_for_its_parts():
    data = {"table": "t", "timestamp": 7, "row_count": 10, "parts": [{"segment": SEGMENT}]}
    assert TableSnapshot.from_json(data).loaded_segments() == {SEGMENT["path"]}
