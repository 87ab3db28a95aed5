"""The live server under load: `deepfake-detect serve` started as a user starts it (its own process, the shipped
detectors loaded once), then ``--requests`` POST /api/v1/predict from ``--clients`` concurrent clients, each
request one face photo (the README's astronaut). Reports errors (any answer but 200), latency (median, p95, max,
seconds per request as a client sees it), throughput, whether every answer is the same numbers (concurrent requests
share one copy of the models), and the server's resident memory (VmRSS) after start, after one warm-up request and
after the run: a leak shows as growth over the run.

    python bench/serve_load.py                     # 200 requests, 4 clients -> bench/results-serve.json
    python bench/serve_load.py --smoke --out /tmp/serve.json
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` (Linux /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, device: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "deepfake_detect.cli", "serve", "--port", str(port), "--device", device]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the server did not answer /healthz in 180 s:\n{log.read_text()[-3000:]}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--device", default="auto", help="the server's --device")
    ap.add_argument("--smoke", action="store_true", help="tiny: 8 requests from 4 clients")
    ap.add_argument("--out", default=str(REPO / "bench/results-serve.json"))
    args = ap.parse_args(argv)
    n = 8 if args.smoke else args.requests
    import skimage.data
    from PIL import Image

    from deepfake_detect.io import write_json

    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "astronaut.png"
        Image.fromarray(skimage.data.astronaut()).save(photo)
        data = photo.read_bytes()
        port = free_port()
        t0 = time.perf_counter()
        server = start_server(port, args.device, Path(tmp) / "server.log")
        startup_s = time.perf_counter() - t0
        url = f"http://127.0.0.1:{port}/api/v1/predict"
        try:
            rss_start = rss_mb(server.pid)
            warm = httpx.post(url, files=[("files", ("astronaut.png", data))], timeout=300)
            assert warm.status_code == 200, warm.text
            rss_warm = rss_mb(server.pid)
            latencies, answers, errors = [], [], []
            lock = threading.Lock()
            todo = iter(range(n))

            def client() -> None:
                with httpx.Client(timeout=300) as c:
                    while True:
                        with lock:
                            k = next(todo, None)
                        if k is None:
                            return
                        t = time.perf_counter()
                        try:
                            r = c.post(url, files=[("files", ("astronaut.png", data))])
                            ok = r.status_code == 200
                        except httpx.HTTPError as e:
                            r, ok = e, False
                        dt = time.perf_counter() - t
                        with lock:
                            latencies.append(dt)
                            if ok:
                                row = r.json()["rows"][0]
                                answers.append([row["p_fake_faceswap"], row["p_fake_generated"]])
                            else:
                                errors.append(str(getattr(r, "text", r))[:300])

            t = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t
            rss_end = rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)
    a = np.asarray(answers)
    command = "python bench/serve_load.py" + (" --smoke" if args.smoke else "")
    if not args.smoke and (n, args.clients) != (200, 4):
        command += f" --requests {n} --clients {args.clients}"
    report = {
        "command": command,
        "requests": n, "clients": args.clients, "errors": len(errors), "error_samples": errors[:3],
        "latency_s": {"median": statistics.median(latencies), "p95": float(np.percentile(latencies, 95)),
                      "max": max(latencies), "mean": statistics.fmean(latencies)},
        "throughput_req_s": n / wall, "wall_s": wall, "server_startup_s": startup_s,
        "answers_identical": bool(len(a) and np.all(a == a[0])),
        "max_abs_dp_across_answers": float(np.abs(a - a[0]).max()) if len(a) else None,
        "server_rss_mb": {"after_start": rss_start, "after_warmup": rss_warm, "after_run": rss_end,
                          "growth_over_run": rss_end - rss_warm},
        "cpu_cores": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "load_average_at_end": list(os.getloadavg()),
    }
    write_json(args.out, report)
    lat = report["latency_s"]
    print(f"{n} requests from {args.clients} clients: {len(errors)} errors, median {lat['median']:.3f} s,"
          f" p95 {lat['p95']:.3f} s, {report['throughput_req_s']:.1f} req/s; server RSS "
          f"{rss_warm:.0f} -> {rss_end:.0f} MB -> {args.out}")
    return report


if __name__ == "__main__":
    main()
