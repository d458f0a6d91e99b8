"""The benchmark harness runs end to end on the test datastack (no PostgreSQL, one round,
a handful of Q5 requests). It checks that the harness works, never how fast anything is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.postgres import available
from bench.run import main


def test_bench_runs_on_a_small_datastack(synth_dir: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results.json"
    main(["--data", str(synth_dir), "--synapses", "30000", "--no-postgres", "--repeat", "1",
          "--requests", "8", "--clients", "2", "--no-full-stream", "--results", str(results)])
    printed = capsys.readouterr().out
    for case in ("Q1 out", "Q1 in", "Q2 |P|=", "Q3 ", "Q4 23P", "Q5 2 clients",
                 "Q5 by kind, p50 / max: ", "CPU during Q5: clients", "Q5 result cache, p99",
                 "Q5 result cache by kind", "Q5 replayed, p99", "Q5 replayed by kind"):
        assert case in printed
    data = json.loads(results.read_text())
    assert data["q5"]["opencave"]["n_errors"] == 0
    # the clients share the server's cores: what each side used is part of Q5's result
    assert data["q5"]["opencave"]["client_cpu_seconds"] > 0
    assert data["q5"]["server_cpu_seconds"] > 0
    for run in ("cached", "replayed"):  # the server as deployed; its side alone
        assert data["q5"][run]["opencave"]["n_errors"] == 0
        assert data["q5"][run]["opencave"]["completed"] == data["q5"][run]["opencave"]["requests"]
    for case in data["cases"].values():
        # caveclient's synapse_query drops autapses; nothing else may differ
        assert case["rows"]["engine"] >= case["rows"]["caveclient"]


@pytest.mark.skipif(not available(), reason="needs the PostgreSQL 15 server binaries")
def test_the_baseline_loads_only_the_versions_asked_for(synth_dir: Path, tmp_path: Path):
    """``--pg-versions 1718``: a real PostgreSQL holds that version alone (a full copy of
    the tables per version, ~28 GB at 10^8); cases at 1718 get the baseline, the others
    run without it."""
    results = tmp_path / "results.json"
    main(["--data", str(synth_dir), "--synapses", "30000", "--repeat", "1",
          "--pg-versions", "1718", "--only", "q1,q2", "--results", str(results)])
    data = json.loads(results.read_text())
    assert {load["version"] for load in data["postgres"]["loads"]} == {1718}
    baseline = {name: "postgres" in case["median"] for name, case in data["cases"].items()}
    assert baseline == {"Q1 out": True, "Q1 in": True, "Q2 |P|=1,436 v1181": False,
                        "Q2 |P|=2,275 v1718": True}
