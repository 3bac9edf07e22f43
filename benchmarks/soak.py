"""Soak `fmnist serve` on loopback: 20,000+ requests of good images and every kind of bad
upload, slow clients, then SIGTERM under load; prints errors, lost answers, memory growth.

    python benchmarks/soak.py [MODEL] [--requests 20000] [--clients 4] [--workers N]

The server runs with its defaults (one worker per core, ONNX Runtime) except for a 50 kB
upload limit (so that "too large" bodies are cheap to send) and a 3 s request time limit
(so that a client too slow for it is answered 408 quickly). The mix and its expected
answers are fmnist.serve.soak's, as in tests/integration/test_soak.py; good images are
test images the served model classifies correctly, and each answer must carry that label.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

import numpy as np
from serve_load import free_port, loadavg, wait_until_up  # beside this file

from fmnist.data import load_data
from fmnist.images import to_png
from fmnist.serve import choose
from fmnist.serve.soak import Case, Soak, bad_cases, good_cases, tree_rss
from fmnist.system import git_commit, hardware, versions

MAX_UPLOAD_MB = 0.05
TIMEOUT = 3.0


def good_images(model: str | None, n: int = 60) -> list[tuple[bytes, str]]:
    """``n`` test images the served model gets right, as PNGs with their labels."""
    clf = choose(model).load()
    _, (x, y) = load_data()
    pred = clf.predict(x[:500])
    right = np.flatnonzero(pred.class_index == y[:500])[:n]
    return [(to_png(x[i]), clf.classes[y[i]]) for i in right]


def main() -> None:
    """Start the server, soak it until --requests answers, stop it with SIGTERM, report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="run directory or model.onnx (default: bundled)")
    ap.add_argument("--requests", type=int, default=20_000, help="answers to wait for (20,000)")
    ap.add_argument("--clients", type=int, default=4, help="keep-alive clients (4), plus 3 slow")
    ap.add_argument("--workers", type=int, help="server processes (default: the server's)")
    args = ap.parse_args()

    port = free_port()
    cmd = [sys.executable, "-m", "fmnist", "serve", *([args.model] if args.model else [])]
    cmd += ["--port", str(port), "--max-upload-mb", str(MAX_UPLOAD_MB), "--timeout", str(TIMEOUT)]
    cmd += ["--workers", str(args.workers)] if args.workers else []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(port, proc)
        good = good_images(args.model)
        png, label = good[0]
        goods = good_cases(good)
        bad = bad_cases(int(MAX_UPLOAD_MB * 2**20))
        slow = [
            (Case("slow", png, "image/png", 200, label), TIMEOUT / 3 / len(png)),
            (goods[1], TIMEOUT / 3 / len(goods[1].body)),
            (Case("too_slow", png, "image/png", 408), 3 * TIMEOUT / len(png)),
        ]
        print(f"hardware: {hardware()} (client and server on the same cores)")
        print(", ".join(f"{k} {v}" for k, v in versions().items()), f"commit {git_commit()}")
        print(f"server: {' '.join(cmd[2:])}; load average before: {loadavg()}", flush=True)
        soak = Soak(port, goods + bad, slow, clients=args.clients)
        start = time.perf_counter()
        soak.start()
        time.sleep(3)
        rss = [tree_rss(proc.pid)]
        while soak.tally.total < args.requests:
            time.sleep(1)
            rss.append(tree_rss(proc.pid))
        elapsed = time.perf_counter() - start
        soak.stop.server.set()
        t_stop = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(60)
        stop_s = time.perf_counter() - t_stop
    finally:
        if proc.poll() is None:
            proc.kill()
    hung = soak.finish(timeout=30)
    report(soak, bad, rss, elapsed, status, stop_s, len(hung))


def report(soak: Soak, bad: list[Case], rss: list[int], elapsed: float, status: int,
           stop_s: float, hung: int) -> None:  # fmt: skip
    """Print the soak's figures."""
    t = soak.tally
    n_bad = sum(t.sent[c.kind] for c in bad) + t.sent["too_slow"]
    p50, p99 = np.percentile(np.array(t.latencies) * 1e3, [50, 99])
    print(f"load average after: {loadavg()}")
    print(
        f"{t.total:,d} answers in {elapsed:.0f} s ({t.total / elapsed:,.0f}/s; p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms), {n_bad:,d} bad uploads ({n_bad / t.total:.1%})"
    )
    print("per kind:", ", ".join(f"{k} {n:,d}" for k, n in sorted(t.sent.items())))
    print(
        f"server errors (5xx) {t.server_errors}, unexpected statuses {sum(t.wrong_status.values())}"
        f" {dict(t.wrong_status)}, wrong labels {t.wrong_labels}, lost answers {t.lost}"
    )
    print(
        f"memory (RSS of the server and its workers): {rss[0] / 2**20:.0f} MB after warm-up, "
        f"peak {max(rss) / 2**20:.0f} MB, end {rss[-1] / 2**20:.0f} MB: growth "
        f"{(max(rss) - rss[0]) / 2**20:.1f} MB"
    )
    print(f"SIGTERM under load: exit status {status} after {stop_s:.1f} s, {hung} clients hung")


if __name__ == "__main__":
    main()
