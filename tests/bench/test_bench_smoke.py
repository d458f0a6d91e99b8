"""The benchmark harness runs end to end on the test datastack (no PostgreSQL, one round,
a handful of Q5 requests). It checks that the harness works, never how fast anything is."""

from __future__ import annotations

import json
from pathlib import Path

from bench.run import main


def test_bench_runs_on_a_small_datastack(synth_dir: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results.json"
    main(["--data", str(synth_dir), "--synapses", "30000", "--no-postgres", "--repeat", "1",
          "--requests", "8", "--clients", "2", "--no-full-stream", "--results", str(results)])
    printed = capsys.readouterr().out
    for case in ("Q1 out", "Q1 in", "Q2 |P|=", "Q3 ", "Q4 23P", "Q5 2 clients"):
        assert case in printed
    data = json.loads(results.read_text())
    assert data["q5"]["opencave"]["n_errors"] == 0
    for case in data["cases"].values():
        # caveclient's synapse_query drops autapses; nothing else may differ
        assert case["rows"]["engine"] >= case["rows"]["caveclient"]
