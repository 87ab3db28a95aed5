"""bench/serve_load.py --smoke: the real `deepfake-detect serve` process under a few concurrent requests; no
error, latencies and the server's memory reported, every answer the same numbers."""
import json
import os
import subprocess
import sys

from conftest import REPO


def test_bench_serve_smoke(tmp_path):
    out = tmp_path / "serve.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    res = subprocess.run([sys.executable, str(REPO / "bench" / "serve_load.py"), "--smoke", "--device", "cpu",
                          "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["requests"] == 8 and report["clients"] == 4 and report["errors"] == 0
    lat = report["latency_s"]
    assert 0 < lat["median"] <= lat["p95"] <= lat["max"]
    assert report["answers_identical"] and report["max_abs_dp_across_answers"] == 0
    rss = report["server_rss_mb"]
    assert rss["after_start"] > 100 and rss["after_run"] > 100  # a torch process with two models, from /proc
    assert report["command"] == "python bench/serve_load.py --smoke"
