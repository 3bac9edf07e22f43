"""HTTP load on `fmnist serve` over loopback with wrk: requests per second, p50, p99, errors.

    python benchmarks/serve_load.py [MODEL] [--workers N] [--seconds 10] [--jpeg] [--python]
                                    [--no-metrics | --metrics-cost ROUNDS]

Starts `fmnist serve [MODEL]` with its defaults (MODEL: a run directory, a model.onnx, or
nothing for the bundled model; one worker per core; ONNX Runtime, exported on the fly and
cached for a checkpoint) on a free 127.0.0.1 port, waits for /readyz, then drives it with
Debian's wrk (`apt-get install -y wrk`): one thread, --clients keep-alive connections
(8) for --seconds (10), each posting 28x28 PNGs (100 test images in turn, a wrk Lua
script). --jpeg also loads photo-like JPEGs; --python adds a client of Python threads
(standard library http.client). The client shares the machine's cores with the server;
wrk needs a small fraction of a core. The load average before and after is printed: on
a shared machine, measure when it is quiet.

--metrics-cost ROUNDS measures what /metrics costs: two servers, one with the counters and
one with --no-metrics, both started and idle, are loaded in turn with the 28x28 PNGs for
--seconds each (ABBA order), ROUNDS times; the machine's drift then falls on both alike.
It prints each pair's requests/s and the servers' CPU time per request (/proc, the
workers included), the medians of the ratios, and the time the counting itself takes per
request (timed alone).
"""

from __future__ import annotations

import argparse
import http.client
import os
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
from typing import Any

import numpy as np

from fmnist.data import load_data
from fmnist.images import render_photo, to_png
from fmnist.serve.soak import process_tree
from fmnist.system import git_commit, hardware, versions


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Poll /readyz until the server is ready (an export on the fly takes a while)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
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


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(
    name: str, client: str, n: int, elapsed: float, p50: float, p99: float, err: object
) -> None:
    """One line of figures."""
    print(
        f"{name:11s} {client:6s} {n:7,d} requests in {elapsed:.1f} s: {n / elapsed:,.0f} "
        f"req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, errors {err}",
        flush=True,
    )


def start(args: argparse.Namespace, metrics: bool) -> tuple[subprocess.Popen, int, list, Any]:
    """Start `fmnist serve` on a free port: (process, port, command, its stderr log)."""
    port = free_port()
    cmd = [sys.executable, "-m", "fmnist", "serve", *([args.model] if args.model else [])]
    cmd += ["--port", str(port), *(["--workers", str(args.workers)] if args.workers else [])]
    cmd += [] if metrics else ["--no-metrics"]
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (read after the server stops)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    return proc, port, cmd, log


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants (/proc)."""
    total = 0.0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a process that ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def counting_seconds(n: int = 20_000) -> float:
    """Seconds per request that the counting itself takes: the middleware around a trivial
    app and the prediction counters, in multiprocess mode as `fmnist serve` runs them."""
    import asyncio

    from fmnist.serve.metrics import Metrics, MetricsMiddleware, multiprocess_dir

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b""})

    async def nothing(message: dict) -> None:
        pass

    async def calls(handler: Any, metrics: Metrics | None) -> float:
        scope = {"type": "http", "path": "/predict"}
        start = time.perf_counter()
        for _ in range(n):
            await handler(scope, None, nothing)
            if metrics is not None:
                metrics.observe_predictions(["Shirt"], [False])
        return time.perf_counter() - start

    with multiprocess_dir():
        metrics = Metrics()
        counted = MetricsMiddleware(app, metrics, ["/predict"])
        asyncio.run(calls(counted, metrics))  # warm-up: the value files are created
        with_counts = asyncio.run(calls(counted, metrics))
    return (with_counts - asyncio.run(calls(app, None))) / n


def metrics_cost(args: argparse.Namespace, ctype: str, bodies: list[bytes]) -> None:
    """Load a server with /metrics and one without in turn; print the paired ratios."""
    servers = {m: start(args, metrics=m) for m in (True, False)}
    try:
        for proc, port, _, _ in servers.values():
            wait_until_up(port, proc)
            wrk_load(port, ctype, bodies, args.clients, 2)  # warm-up
        print(f"hardware: {hardware()} (client and servers on the same cores)")
        print(", ".join(f"{k} {v}" for k, v in versions().items()), f"commit {git_commit()}")
        print(f"{args.metrics_cost} rounds of {args.seconds:g} s each, {args.clients} connections; "
              f"load average before: {loadavg()}", flush=True)  # fmt: skip
        ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
        cpu_with: list[float] = []  # server CPU seconds per request with /metrics
        for r in range(args.metrics_cost):
            rate, cpu = {}, {}
            for m in (True, False) if r % 2 == 0 else (False, True):  # ABBA
                proc, port = servers[m][:2]
                before = cpu_seconds(proc.pid)
                n, elapsed, _, _, errors = wrk_load(port, ctype, bodies, args.clients, args.seconds)
                rate[m], cpu[m] = n / elapsed, (cpu_seconds(proc.pid) - before) / n
                if errors:
                    raise RuntimeError(f"{errors} errors with metrics={m}")
            ratios["wall"].append(rate[False] / rate[True] - 1)
            ratios["cpu"].append(cpu[True] / cpu[False] - 1)
            cpu_with.append(cpu[True])
            print(f"round {r + 1}: with /metrics {rate[True]:,.0f} req/s, "
                  f"{cpu[True] * 1e3:.2f} CPU ms/request; without {rate[False]:,.0f}, "
                  f"{cpu[False] * 1e3:.2f}", flush=True)  # fmt: skip
        for kind, what in (("wall", "time per request"), ("cpu", "server CPU per request")):
            q1, med, q3 = np.percentile(ratios[kind], [25, 50, 75])
            print(f"/metrics adds {med:+.1%} to the {what} (median of {args.metrics_cost} "
                  f"pairs; quartiles {q1:+.1%}, {q3:+.1%})")  # fmt: skip
        counting = counting_seconds()
        cpu = float(np.median(cpu_with))
        print(f"the counting itself: {counting * 1e6:.1f} us per request (middleware and "
              f"counters, multiprocess mode), {counting / cpu:.1%} of the median server CPU "
              f"per request with /metrics ({cpu * 1e3:.2f} ms); load average after: "
              f"{loadavg()}")  # fmt: skip
    finally:
        for proc, *_ in servers.values():
            proc.terminate()
            proc.wait(30)


def main() -> None:
    """Start the server, load it with each payload, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="run directory or model.onnx (default: bundled)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent connections (8)")
    ap.add_argument("--seconds", type=float, default=10, help="duration per payload (10)")
    ap.add_argument("--max-requests", type=int, default=200_000, help="Python client's cap")
    ap.add_argument("--workers", type=int, help="server processes (default: the server's)")
    ap.add_argument("--jpeg", action="store_true", help="also photo-like JPEGs")
    ap.add_argument("--python", action="store_true", help="also a Python-threads client")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--no-metrics", action="store_true", help="serve with --no-metrics")
    which.add_argument(
        "--metrics-cost",
        type=int,
        metavar="ROUNDS",
        help="load servers with and without /metrics in turn, ROUNDS pairs",
    )
    args = ap.parse_args()
    if args.metrics_cost is not None and args.metrics_cost < 1:
        ap.error(f"--metrics-cost takes a number of rounds >= 1, got {args.metrics_cost}")
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (Debian's C load generator).")

    _, (x_test, _) = load_data()
    rng = np.random.default_rng(0)
    payloads = {"28x28 PNG": ("image/png", [to_png(im) for im in x_test[:100]])}
    if args.jpeg:
        payloads["photo JPEG"] = ("image/jpeg", [render_photo(im, rng) for im in x_test[:100]])
    if args.metrics_cost:
        metrics_cost(args, *payloads["28x28 PNG"])
        return
    proc, port, cmd, log = start(args, metrics=not args.no_metrics)
    started = time.perf_counter()
    try:
        wait_until_up(port, proc)
        print(f"ready after {time.perf_counter() - started:.1f} s (an export included, if any)")
        print(f"hardware: {hardware()} (client and server on the same cores)")
        print(", ".join(f"{k} {v}" for k, v in versions().items()), f"commit {git_commit()}")
        print(f"server: {' '.join(cmd[2:])}; {args.clients} connections, {args.seconds:g} s")
        print(f"load average before: {loadavg()}", flush=True)
        for name, (ctype, bodies) in payloads.items():
            wrk_load(port, ctype, bodies, args.clients, 2)  # warm-up
            n, elapsed, p50, p99, errors = wrk_load(port, ctype, bodies, args.clients, args.seconds)
            report(name, "wrk", n, elapsed, p50, p99, errors)
            if args.python:
                lat, statuses, elapsed = load(
                    port, ctype, bodies, args.clients, args.seconds, args.max_requests
                )
                p50, p99 = np.percentile(np.array(lat) * 1e3, [50, 99])
                errors = sum(n for s, n in statuses.items() if s != 200)
                report(name, "Python", len(lat), elapsed, p50, p99, f"{errors} {dict(statuses)}")
        print(f"load average after: {loadavg()}")
    finally:
        proc.terminate()
        proc.wait(30)
    log.seek(0)
    print(*(line.rstrip() for line in log if line.startswith("fmnist serve: ")), sep="\n")


if __name__ == "__main__":
    main()
