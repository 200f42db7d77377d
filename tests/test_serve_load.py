"""benchmarks/serve_load.py's dry run: a tiny model served by `layout2img serve` on 127.0.0.1 under
generating (10 % malformed) and editing clients for a few seconds; the report has the latency
figures, every status, no 5xx, the server up afterwards and the machine line."""
import json
import subprocess
import sys

from conftest import REPO


def test_serve_load_dry_run_reports_latency_statuses_and_a_live_server(tmp_path):
    out = tmp_path / "serve_load.json"
    res = subprocess.run([sys.executable, "benchmarks/serve_load.py", "--dry-run", "--allow-busy", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["server_errors_5xx"] == 0 and report["transport_errors"] == 0
    assert report["server_up_after"] is True and report["server_exit_code"] == 0
    g = report["generate"]
    assert g["ok"] >= 1 and g["statuses"] == {"200": g["ok"]}
    assert g["latency_ms"]["p50"] <= g["latency_ms"]["p99"] <= g["latency_ms"]["max"]
    assert sum(g["batch_sizes"].values()) == g["ok"]
    assert report["malformed"]["all_4xx"] is True
    assert report["edit"]["submitted"] >= 1 and set(report["edit"]["statuses"]) <= {"202", "429"}
    p = report["protocol"]
    assert p["dry_run"] is True and p["duration_s"] <= 3 and p["max_requests"] <= 60
    assert "--host" in p["server"] and p["server"][p["server"].index("--host") + 1] == "127.0.0.1"
    assert report["machine_line"] and report["machine"]["guard"]["max_load"] > 0
    assert "generate:" in res.stdout and "server up after: True" in res.stdout
