"""Views with the real caveclient: listed, described, queried with filters through
``client.materialize.views``, and equal to the join they stand for."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from requests import HTTPError

from opencave.api import create_app
from opencave.instance import OpenCave
from tests.conftest import LiveServer

DS = "minnie65_public"
LOOKUP = {
    "tables": [["nucleus_detection_v0", "id"], ["aibs_metamodel_celltypes_v661", "target_id"]],
    "left_join": True,
    "select_column_map": {"nucleus_detection_v0": ["id", "volume", "pt_position", "pt_root_id"],
                          "aibs_metamodel_celltypes_v661": ["classification_system",
                                                            "cell_type"]},
    "suffix_map": {"nucleus_detection_v0": "", "aibs_metamodel_celltypes_v661": "_ref"},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, synth_dir):
    data = tmp_path_factory.mktemp("views") / "data"
    shutil.copytree(synth_dir, data)
    subprocess.run([sys.executable, "-m", "opencave.cli", "view", "add", "--data", str(data),
                    "nucleus_detection_lookup_v1", "--spec", json.dumps(LOOKUP),
                    "--description", "nuclei with their cell types"], check=True)
    cave = OpenCave(data)
    with LiveServer(create_app(cave)) as live:
        yield live.url
    cave.close()


def test_views_are_listed_with_schemas_and_metadata(served):
    from caveclient import CAVEclient

    client = CAVEclient(DS, server_address=served)
    views = client.materialize.get_views()
    assert list(views) == ["nucleus_detection_lookup_v1"]
    assert views["nucleus_detection_lookup_v1"]["description"] == "nuclei with their cell types"
    schema = client.materialize.get_view_schema("nucleus_detection_lookup_v1")
    assert schema["pt_position"] == {"type": "SpatialPoint"}
    assert schema["cell_type"] == {"type": "string"}
    assert schema["pt_root_id"] == {"type": "integer"}
    meta = client.materialize.get_view_metadata("nucleus_detection_lookup_v1")
    assert meta["voxel_resolution"] == [4.0, 4.0, 40.0] if "voxel_resolution" in meta else True


def test_querying_a_view_equals_its_join(served):
    from caveclient import CAVEclient

    client = CAVEclient(DS, server_address=served)
    everything = client.materialize.views.nucleus_detection_lookup_v1().query(
        split_positions=True)
    nuclei = client.materialize.query_table("nucleus_detection_v0")
    assert sorted(everything.id) == sorted(nuclei.id)  # a left join keeps every nucleus
    types = client.materialize.tables.aibs_metamodel_celltypes_v661().query()
    typed = everything.dropna(subset=["cell_type"])
    assert len(typed) == len(types)
    bc = client.materialize.views.nucleus_detection_lookup_v1(cell_type="BC").query()
    assert len(bc) == (types.cell_type == "BC").sum() and (bc.cell_type == "BC").all()
    root = int(nuclei[nuclei.pt_root_id != 0].pt_root_id.iloc[0])
    mine = client.materialize.query_view("nucleus_detection_lookup_v1",
                                         filter_in_dict={"pt_root_id": [root]},
                                         select_columns=["id", "pt_root_id", "pt_position"],
                                         desired_resolution=[1, 1, 1])
    assert set(mine.pt_root_id) == {root}
    assert list(mine.columns) == ["id", "pt_supervoxel_id", "pt_root_id", "pt_position"]
    row = nuclei.set_index("id").loc[mine.id.iloc[0]]
    assert list(mine.pt_position.iloc[0]) == [row.pt_position[0] * 4, row.pt_position[1] * 4,
                                              row.pt_position[2] * 40]


def test_view_filters_on_points_and_bad_columns(served):
    from caveclient import CAVEclient

    client = CAVEclient(DS, server_address=served)
    everything = client.materialize.views.nucleus_detection_lookup_v1().query(
        split_positions=True)
    x = int(everything.pt_position_x.median())
    box = [[x, 0, 0], [10**7, 10**7, 10**7]]
    expected = (everything.pt_position_x >= x).sum()
    right = client.materialize.query_view("nucleus_detection_lookup_v1",
                                          filter_spatial_dict={"pt_position": box})
    assert len(right) == expected
    view = client.materialize.views.nucleus_detection_lookup_v1
    (bbox,) = [f for f in view.fields if f.endswith("_bbox")]  # caveclient's name for it
    assert len(view(**{bbox: box}).query()) == expected
    with pytest.raises(HTTPError) as error:
        client.materialize.query_view("nucleus_detection_lookup_v1",
                                      filter_equal_dict={"nope": 1})
    assert error.value.response.status_code == 400
    assert "nope" in error.value.response.text


def test_no_views_is_an_empty_dict_not_a_404(server):
    from caveclient import CAVEclient

    client = CAVEclient(DS, server_address=server)
    assert client.materialize.get_view_schemas() == {}
    assert client.materialize.get_views() == {}
