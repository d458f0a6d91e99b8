"""Every call of the MICrONS tutorials (``../shared/seeds``), run with the real caveclient
against a real server — only ``server_address`` differs from the tutorials."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from opencave.synth import world

NUCLEUS_METADATA_KEYS = {
    "valid", "created", "schema", "aligned_volume", "table_name", "id", "schema_type",
    "user_id", "description", "notice_text", "reference_table", "flat_segmentation_source",
    "write_permission", "read_permission", "last_modified", "segmentation_source",
    "pcg_table_name", "last_updated", "voxel_resolution",
}
TUTORIAL_TABLES = {
    "synapses_pni_2", "nucleus_detection_v0", "aibs_metamodel_celltypes_v661",
    "aibs_metamodel_mtypes_v661_v2", "allen_v1_column_types_slanted_ref",
    "proofreading_status_and_strategy", "synapse_target_predictions_ssa_v2",
    "aibs_soma_nuc_metamodel_preds_v117", "nucleus_ref_neuron_svm",
}


def some_roots(client, n=3):
    nuclei = client.materialize.query_table("nucleus_detection_v0")
    roots = nuclei.loc[nuclei.pt_root_id != 0, "pt_root_id"].drop_duplicates()
    return [int(r) for r in roots.iloc[:n]]


def busiest_presynaptic_root(client):
    proof = client.materialize.query_table("proofreading_status_and_strategy")
    counts = [(len(client.materialize.synapse_query(pre_ids=int(r))), int(r))
              for r in proof.pt_root_id.iloc[:8]]
    return max(counts)[1]


class TestQuickstart:
    """Seed 000: CAVE Quickstart (version 1718)."""

    def test_datastack_description(self, client):
        assert client.info.get_datastack_info()["description"] == (
            "This is the publicly released version of the minnie65 volume and segmentation. ")

    def test_versions_and_their_timestamps(self, client):
        versions = client.materialize.get_versions()
        assert sorted(versions) == [v for v, _ in world.VERSIONS]
        for version, timestamp in world.VERSIONS:
            assert client.materialize.get_timestamp(version) == timestamp

    def test_tables_and_metadata(self, client):
        client.version = 1718
        assert set(client.materialize.get_tables()) >= TUTORIAL_TABLES
        meta = client.materialize.get_table_metadata("nucleus_detection_v0")
        assert set(meta) >= NUCLEUS_METADATA_KEYS
        assert meta["voxel_resolution"] == [4.0, 4.0, 40.0]
        assert meta["schema"] == "nucleus_detection" and meta["reference_table"] is None

    def test_whole_nucleus_table(self, client):
        client.version = 1718
        df = client.materialize.query_table("nucleus_detection_v0")
        assert list(df.columns) == ["id", "created", "superceded_id", "valid", "volume",
                                    "pt_supervoxel_id", "pt_root_id", "pt_position",
                                    "bb_start_position", "bb_end_position"]
        assert (df.pt_root_id == 0).any() and (df.pt_root_id != 0).any()
        assert df.id.is_unique and len(df) == client.materialize.get_annotation_count(
            "nucleus_detection_v0")

    def test_query_options_together(self, client, caplog):
        client.version = 1718
        df = client.materialize.query_table(
            "nucleus_detection_v0", split_positions=True, desired_resolution=[1, 1, 1],
            select_columns=["pt_position", "pt_root_id"], limit=10)
        assert list(df.columns) == ["pt_position_x", "pt_position_y", "pt_position_z",
                                    "pt_supervoxel_id", "pt_root_id"]
        assert len(df) == 10
        assert 'Limited query to 10 rows' in caplog.text
        raw = client.materialize.query_table(
            "nucleus_detection_v0", split_positions=True,
            select_columns=["pt_position", "pt_root_id"], limit=10)
        assert (df.pt_position_x == raw.pt_position_x * 4).all()
        assert (df.pt_position_z == raw.pt_position_z * 40).all()

    def test_table_manager_on_a_reference_table(self, client):
        client.version = 1718
        df = client.materialize.tables.aibs_metamodel_celltypes_v661().query()
        assert {"id", "created", "valid", "volume", "pt_supervoxel_id", "pt_root_id", "id_ref",
                "created_ref", "valid_ref", "target_id", "classification_system", "cell_type",
                "pt_position", "bb_start_position", "bb_end_position"} == set(df.columns)
        assert (df.id == df.target_id).all()

    def test_table_manager_formatting_options(self, client):
        client.version = 1718
        df = client.materialize.tables.aibs_metamodel_celltypes_v661().query(
            split_positions=True, desired_resolution=[1, 1, 1],
            select_columns=["pt_position", "pt_root_id", "cell_type"], limit=10)
        assert set(df.columns) == {"cell_type", "pt_position_x", "pt_position_y",
                                   "pt_position_z", "pt_supervoxel_id", "pt_root_id"}
        assert len(df) == 10

    def test_table_manager_filters(self, client):
        client.version = 1718
        everything = client.materialize.tables.aibs_metamodel_celltypes_v661().query()
        bc = client.materialize.tables.aibs_metamodel_celltypes_v661(cell_type="BC").query()
        assert len(bc) == (everything.cell_type == "BC").sum() > 0
        assert (bc.cell_type == "BC").all()
        roots = [int(r) for r in everything.pt_root_id.iloc[:3]]
        mine = client.materialize.tables.aibs_metamodel_celltypes_v661(
            pt_root_id=roots).query()
        assert set(mine.pt_root_id) == set(roots)
        assert len(mine) == everything.pt_root_id.isin(roots).sum()

    def test_proofread_neurons(self, client):
        client.version = 1718
        proof_all = client.materialize.query_table(
            "proofreading_status_and_strategy", desired_resolution=[1, 1, 1],
            split_positions=True)
        counts = proof_all["strategy_axon"].value_counts()
        assert set(counts.index) <= set(world.AXON_STRATEGIES) | {"none"}
        wanted = ["axon_partially_extended", "axon_fully_extended", "axon_interareal",
                  "axon_column_truncated"]
        proof = client.materialize.query_table(
            "proofreading_status_and_strategy", filter_in_dict={"strategy_axon": wanted},
            desired_resolution=[1, 1, 1], split_positions=True)
        assert len(proof) == proof_all.strategy_axon.isin(wanted).sum()
        assert "pt_position_x" in proof.columns


class TestProofreadingTables:
    """Seed 001: proofread neurons at version 1300, merged with cell types."""

    def test_standard_and_content_aware_queries(self, client):
        client.version = 1300
        standard = client.materialize.query_table("proofreading_status_and_strategy")
        axons = client.materialize.tables.proofreading_status_and_strategy(
            status_axon="t").query()
        assert len(axons) == standard.status_axon.sum() > 0
        assert axons.status_axon.all()

    def test_intersection_of_proofread_and_typed_cells(self, client):
        client.version = 1300
        proof_df = client.materialize.tables.proofreading_status_and_strategy(
            status_axon="t").query()
        select = {"nucleus_detection_v0": ["pt_root_id", "id"],
                  "aibs_metamodel_celltypes_v661": ["classification_system", "cell_type"]}
        cell_type_df = client.materialize.tables.aibs_metamodel_celltypes_v661().query(
            select_columns=select)
        assert {"pt_root_id", "id", "classification_system", "cell_type"} <= set(
            cell_type_df.columns)
        cell_type_df = (cell_type_df.drop_duplicates("pt_root_id", keep=False)
                        .rename(columns={"id": "nucleus_id"}))
        merged = pd.merge(proof_df[["pt_root_id"]], cell_type_df, on="pt_root_id")
        proof_23p = (client.materialize.tables.aibs_metamodel_celltypes_v661(
            pt_root_id=proof_df.pt_root_id, cell_type="23P").query(select_columns=select)
            .rename(columns={"id": "nucleus_id"})
            .merge(proof_df, on="pt_root_id", how="inner"))
        assert (proof_23p.cell_type == "23P").all()
        assert set(proof_23p.nucleus_id) >= set(merged.loc[merged.cell_type == "23P",
                                                           "nucleus_id"])


class TestProgrammaticAccess:
    """Seed 002: programmatic access, including the v117 soma/nucleus cell types."""

    def test_soma_nucleus_types_with_the_table_manager(self, client):
        table = client.materialize.tables.aibs_soma_nuc_metamodel_preds_v117
        everything = table().query()
        assert len(everything) > 0
        trimmed = table().query(split_positions=True, desired_resolution=[1, 1, 1],
                                select_columns=["pt_position", "pt_root_id", "cell_type"],
                                limit=10)
        assert len(trimmed) == 10
        bc = table(cell_type="BC").query()
        assert len(bc) == (everything.cell_type == "BC").sum()
        roots = [int(r) for r in everything.pt_root_id.iloc[:3]]
        assert set(table(pt_root_id=roots).query().pt_root_id) == set(roots)

    def test_synapse_query_and_connection_counts(self, client):
        root = busiest_presynaptic_root(client)
        syn_df = client.materialize.synapse_query(pre_ids=root)
        assert len(syn_df) > 0 and (syn_df.pre_pt_root_id == root).all()
        assert (syn_df.pre_pt_root_id != syn_df.post_pt_root_id).all()
        assert {"id", "created", "superceded_id", "valid", "size", "pre_pt_supervoxel_id",
                "pre_pt_root_id", "post_pt_supervoxel_id", "post_pt_root_id",
                "pre_pt_position", "post_pt_position", "ctr_pt_position"} == set(syn_df.columns)
        counts = syn_df.groupby(["pre_pt_root_id", "post_pt_root_id"]).count()[["id"]].rename(
            columns={"id": "syn_count"}).sort_values(by="syn_count", ascending=False)
        assert counts.syn_count.sum() == len(syn_df)


class TestSynapticConnectivity:
    """Seed 003: the synapse graph among proofread neurons at version 1181."""

    def test_limited_synapse_query(self, client):
        client.version = 1181
        table = client.info.get_datastack_info()["synapse_table"]
        syn = client.materialize.query_table(table, limit=10, desired_resolution=[1, 1, 1],
                                             split_positions=True)
        assert list(syn.columns) == [
            "id", "created", "superceded_id", "valid",
            "pre_pt_position_x", "pre_pt_position_y", "pre_pt_position_z",
            "post_pt_position_x", "post_pt_position_y", "post_pt_position_z",
            "ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z", "size",
            "pre_pt_supervoxel_id", "pre_pt_root_id", "post_pt_supervoxel_id",
            "post_pt_root_id"]
        assert len(syn) == 10 and syn.id.is_monotonic_increasing

    def test_graph_among_proofread_neurons(self, client):
        client.version = 1181
        proof_df = client.materialize.tables.proofreading_status_and_strategy(
            status_axon="t").query(desired_resolution=[1, 1, 1], split_positions=True)
        table = client.info.get_datastack_info()["synapse_table"]
        syn = client.materialize.query_table(
            table, desired_resolution=[1, 1, 1], split_positions=True,
            filter_in_dict={"pre_pt_root_id": proof_df["pt_root_id"],
                            "post_pt_root_id": proof_df["pt_root_id"]})
        proofread = set(proof_df.pt_root_id)
        assert len(syn) > 0
        assert syn.pre_pt_root_id.isin(proofread).all()
        assert syn.post_pt_root_id.isin(proofread).all()
        syn = syn[syn["pre_pt_root_id"] != syn["post_pt_root_id"]]
        matrix = syn.pivot_table(index="pre_pt_root_id", columns="post_pt_root_id",
                                 values="size", aggfunc=lambda x: float(np.sum(x) > 0)).fillna(0)
        assert matrix.values.max() == 1.0

    def test_cell_type_tables_merged(self, client):
        client.version = 1181
        manual = client.materialize.query_table("allen_v1_column_types_slanted_ref",
                                                desired_resolution=[1, 1, 1],
                                                split_positions=True)
        assert {"id", "created", "valid", "target_id", "classification_system", "cell_type",
                "id_ref", "created_ref", "valid_ref", "volume", "pt_position_x",
                "pt_supervoxel_id", "pt_root_id"} <= set(manual.columns)
        manual.rename(columns={"target_id": "nucleus_id"}, inplace=True)
        manual.drop_duplicates("pt_root_id", keep=False, inplace=True)
        auto = client.materialize.query_table("aibs_metamodel_celltypes_v661",
                                              desired_resolution=[1, 1, 1],
                                              split_positions=True)
        auto.drop_duplicates("pt_root_id", keep=False, inplace=True)
        assert set(auto.classification_system) <= {"excitatory_neuron", "inhibitory_neuron",
                                                   "nonneuron"}
        both = pd.merge(auto[["pt_root_id", "classification_system", "cell_type", "id_ref"]],
                        manual[["pt_root_id", "classification_system", "cell_type"]],
                        on="pt_root_id", how="outer", suffixes=["_auto", "_manual"])
        assert len(both) >= len(auto)


class TestTargetPredictions:
    """Seed 004: synapse target predictions joined to their synapses at version 1718."""

    @pytest.mark.parametrize("side", ["post_pt_root_id", "pre_pt_root_id"])
    def test_predictions_for_a_cell(self, server, side):
        from caveclient import CAVEclient

        CAVEclient("minnie65_public", server_address=server)  # caches minnie65_public → server
        client = CAVEclient("minnie65_public", version=1718)
        assert client.materialize.version == 1718
        predictions = client.materialize.query_table("synapse_target_predictions_ssa_v2",
                                                     limit=50)
        root = int(predictions[side].value_counts().index[0])
        annotated = client.materialize.tables.synapse_target_predictions_ssa_v2(
            **{side: root}).query(desired_resolution=[1, 1, 1], split_positions=True)
        wanted = ["id", "size", "pre_pt_root_id", "post_pt_root_id", "tag", "value",
                  "ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z"]
        rows = annotated[wanted]
        assert len(rows) > 0 and (rows[side] == root).all()
        assert set(rows.tag) <= {"spine", "shaft", "soma"}
        synapses = client.materialize.synapse_query(**{
            ("post_ids" if side.startswith("post") else "pre_ids"): root},
            remove_autapses=False, desired_resolution=[1, 1, 1], split_positions=True)
        merged = rows.merge(synapses, on="id", suffixes=("", "_syn"))
        assert len(merged) == len(rows)
        assert (merged.ctr_pt_position_x == merged.ctr_pt_position_x_syn).all()
