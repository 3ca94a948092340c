"""The benchmarks, small, so they cannot rot: each completes and reports every number.

Only completion and shape are asserted; the numbers themselves live in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys


def test_propagation_benchmark_completes_and_reports(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.propagation", "--runs", "10", "--rate", "10",
                           "--duration", "2", "--timeout", "120", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for side in ("operator", "floor", "contract_floor"):
        r = result[side]
        assert r["changes"] == 20 and r["propagated"] == 20, r
        for key in ("p50_ms", "p95_ms", "p99_ms", "sustained_per_s", "writes_per_change", "rss_mb", "cpu_seconds"):
            assert isinstance(r[key], (int, float)), key
    assert result["restart_writes"] == {}
    assert isinstance(result["restart_seconds"], float)
    assert isinstance(result["p99_ratio_to_floor"], float)
    # The first sync's writes replayed without the operator: every child of every run, and every
    # run's and share's status, accepted by the API server.
    replay = result["replay_first_sync"]
    assert replay["children"] == 10 * 4 and replay["statuses"] == 20, replay
    assert set(result["first_sync_ratio_to_replay"]) == {"children", "children_and_status",
                                                         "create_and_sync_to_children_and_status"}
    assert result["initial_sync_writes"].get("POST toolruns") == 10, result["initial_sync_writes"]
    # The contract floor made exactly the contract's writes: an Ingress apply and a run status per change.
    assert result["contract_floor"]["writes"] == {"APPLY ingresses": 20, "PATCH toolruns/status": 20}, result["contract_floor"]
    assert set(result["apiserver_cpu_ratio_to_contract_floor"]) == {"add", "revoke"}


def test_restart_benchmark_completes_and_reports(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.restart", "--runs", "5", "--repeat", "2",
                           "--timeout", "120", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["restarts"]) == 2
    for r in result["restarts"]:
        assert r["writes"] == {}, r  # a restart over unchanged runs writes nothing
        assert r["restart_seconds"] > 0 and r["bare_list_seconds"] > 0 and r["cpu_seconds"] > 0, r
    assert set(result["median_by_code"]) == set(result["code"])


def test_memory_benchmark_completes_and_reports_the_operator_and_the_gate(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--runs", "5", "--idle", "0.5", "--idle-window", "1",
                           "--gate-starts", "1", "--timeout", "120", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["created"] == 5 and result["rss_mb_after_restart"] > 0, result
    [gate] = result["gate"]
    assert gate["ready_seconds"] > 0 and gate["rss_mb"] > 0 and gate["peak_rss_mb"] >= gate["rss_mb"], gate
