"""HTTP load on the server over loopback: requests per second and latency p50/p99.

    python benchmarks/serve_load.py RUN_DIR/model.onnx [--clients 8] [--seconds 20] [--workers 2]

Starts `fmnist serve MODEL` on a free 127.0.0.1 port in a subprocess, then runs a bounded
load: --clients keep-alive connections posting images back to back for --seconds (the
Python client also stops after --max-requests). Reports throughput, latency percentiles
and every non-200 answer, for 28x28 PNGs and for photo-like JPEGs (100 of each, in turn).

Two load generators: Python threads with the standard library's http.client (always), and
wrk (`apt-get install wrk`; used when it is on the PATH, or skipped with --no-wrk), a C
load generator. The client shares the machine's cores with the server: the Python client
needs about as much CPU per request as the server, wrk a small fraction, so wrk's figures
are closer to what the server holds on its own.
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from fmnist.data import load_data
from fmnist.images import render_photo, to_png
from fmnist.system import hardware, versions


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Poll /health until the server answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server did not answer on port {port} within {timeout} s")


def load(
    port: int, ctype: str, bodies: list[bytes], clients: int, seconds: float, max_requests: int
) -> tuple[list[float], Counter, float]:
    """Run the load; returns (latencies in s, status counts, elapsed s)."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    lock = threading.Lock()
    budget = iter(range(max_requests))  # shared: bounds the total number of requests
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, codes, i = [], Counter(), k
        while time.monotonic() < stop and next(budget, None) is not None:
            body = bodies[i % len(bodies)]
            i += clients
            t = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": ctype})
                resp = conn.getresponse()
                resp.read()
                codes[resp.status] += 1
            except (OSError, http.client.HTTPException) as e:
                codes[type(e).__name__] += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)
            statuses.update(codes)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, statuses, time.perf_counter() - start


# wrk's Lua hooks: cycle through the payload files; errors include non-2xx answers.
WRK_SCRIPT = """
local bodies, ctype, i = {}, nil, 0
function init(args)
  ctype = args[1]
  for k = 2, #args do
    local f = assert(io.open(args[k], "rb")); bodies[#bodies + 1] = f:read("*all"); f:close()
  end
end
function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/predict", {["Content-Type"] = ctype}, bodies[i])
end
function done(summary, latency, requests)
  io.write(string.format("p50_us %d p99_us %d requests %d duration_us %d errors %d\\n",
    latency:percentile(50), latency:percentile(99), summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout))
end
"""


def wrk_load(
    port: int, ctype: str, bodies: list[bytes], clients: int, seconds: float
) -> tuple[int, float, float, float, int]:
    """Run wrk (1 thread, ``clients`` connections); (requests, s, p50 ms, p99 ms, errors)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(WRK_SCRIPT)
        files = []
        for k, body in enumerate(bodies):
            files.append(Path(tmp) / f"{k}.bin")
            files[-1].write_bytes(body)
        cmd = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "-s", str(script),
               f"http://127.0.0.1:{port}/", "--", ctype, *map(str, files)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"p50_us (\d+) p99_us (\d+) requests (\d+) duration_us (\d+) errors (\d+)", out)
    if m is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    p50, p99, n, dur, errors = map(int, m.groups())
    return n, dur / 1e6, p50 / 1e3, p99 / 1e3, errors


def main() -> None:
    """Start the server, load it with each payload, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model.onnx (or a run directory)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent connections (8)")
    ap.add_argument("--seconds", type=float, default=20, help="duration per payload (20)")
    ap.add_argument("--max-requests", type=int, default=200_000, help="cap per payload")
    ap.add_argument("--no-wrk", action="store_true", help="only the Python client")
    ap.add_argument("--workers", type=int, default=1, help="server processes (1)")
    args = ap.parse_args()
    use_wrk = not args.no_wrk and shutil.which("wrk") is not None

    _, (x_test, _) = load_data()
    rng = np.random.default_rng(0)
    payloads = {
        "28x28 PNG": ("image/png", [to_png(im) for im in x_test[:100]]),
        "photo JPEG": ("image/jpeg", [render_photo(im, rng) for im in x_test[:100]]),
    }
    port = free_port()
    cmd = [sys.executable, "-m", "fmnist", "serve", args.model, "--port", str(port),
           "--workers", str(args.workers)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_up(port, proc)
        print(f"hardware: {hardware()} (client and server on the same cores)")
        print(", ".join(f"{k} {v}" for k, v in versions().items()))
        print(f"server: {' '.join(cmd[2:])}; {args.clients} clients, {args.seconds:g} s each")
        for name, (ctype, bodies) in payloads.items():
            load(port, ctype, bodies, args.clients, 2, 2_000)  # warm-up
            lat, statuses, elapsed = load(
                port, ctype, bodies, args.clients, args.seconds, args.max_requests
            )
            p50, p99 = np.percentile(np.array(lat) * 1e3, [50, 99])
            errors = sum(n for s, n in statuses.items() if s != 200)
            print(
                f"{name:11s} Python {len(lat):7,d} requests in {elapsed:.1f} s: "
                f"{len(lat) / elapsed:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                f"errors {errors} {dict(statuses)}"
            )
            if use_wrk:
                n, elapsed, p50, p99, errors = wrk_load(
                    port, ctype, bodies, args.clients, args.seconds
                )
                print(
                    f"{name:11s} wrk    {n:7,d} requests in {elapsed:.1f} s: "
                    f"{n / elapsed:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                    f"errors {errors}"
                )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
