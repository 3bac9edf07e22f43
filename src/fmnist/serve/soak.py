"""A soak client for a running server: good images mixed with every kind of bad upload.

Used by tests/integration/test_soak.py (bounded) and benchmarks/soak.py (20,000+
requests). Keep-alive clients post a shuffled mix of cases, each with the status it must
get (and, for good images, the label); slow clients send a good image one byte at a time
(answered 200) or too slowly for the request time limit (answered 408). The server's
memory (resident set of it and its workers, from /proc) is sampled throughout.
"""

from __future__ import annotations

import http.client
import io
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..formats import decoders
from ..images import to_png

BOUNDARY = "soakboundary"


@dataclass(frozen=True)
class Case:
    """One kind of request and what the server must answer."""

    kind: str  # "good", "not_an_image", "truncated", ...
    body: bytes
    content_type: str
    status: int  # the expected HTTP status
    label: str | None = None  # good images: the expected class


def multipart(data: bytes, field: str = "file", name: str = "x.png") -> bytes:
    """A multipart/form-data body with one file part (boundary :data:`BOUNDARY`)."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def png_bomb(side: int = 20_000) -> bytes:
    """A ~50 kB 1-bit PNG whose header claims side x side pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    z = zlib.compressobj(9)
    idat = b"".join(z.compress(b"\0" * (1 + side // 8)) for _ in range(side)) + z.flush()
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def heif_bomb(side: int = 3000) -> bytes:
    """A few kB of AVIF, side x side pixels coded, whose header ("ispe" box) says 100 x 100:
    a decoder that trusts the header's size passes the pixel limit and allocates the rest."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 255).save(buf, "AVIF", quality=10, speed=10)
    data = bytearray(buf.getvalue())
    at = data.find(b"ispe")  # box type, then version/flags (4 bytes), width, height
    data[at + 8 : at + 16] = struct.pack(">II", 100, 100)
    return bytes(data)


def bad_cases(max_upload_bytes: int) -> list[Case]:
    """Every kind of bad upload, each with the 4xx status it must get."""
    noise = to_png(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    mp = f"multipart/form-data; boundary={BOUNDARY}"
    cases = [
        Case("not_an_image", b"this is not an image", "image/png", 415),
        Case("truncated", noise[: len(noise) // 2], "image/png", 422),
        Case("too_large", bytes(max_upload_bytes + 1), "image/png", 413),
        Case("too_many_pixels", png_bomb(), "image/png", 413),
        Case("empty", b"", "image/png", 400),
        Case("empty_part", multipart(b""), mp, 400),
        Case("malformed_multipart", multipart(noise)[:-30], mp, 400),
        Case("multipart_garbage", b"garbage, not multipart", mp, 400),
        Case("multipart_no_boundary", b"--x--", "multipart/form-data", 400),
        Case("wrong_field", multipart(noise, field="photo"), mp, 422),
        Case("unsupported_type", b"{}", "application/json", 415),
    ]
    if "AVIF" in decoders():  # Pillow can make one (its wheels since 11.3)
        cases.append(Case("heif_bomb", heif_bomb(), "image/avif", 415))  # refused: no --heif
    return cases


def good_cases(images: list[tuple[bytes, str]]) -> list[Case]:
    """Good PNGs, as raw bodies and as multipart uploads, with their expected labels."""
    mp = f"multipart/form-data; boundary={BOUNDARY}"
    out = []
    for i, (png, label) in enumerate(images):
        if i % 2:
            out.append(Case("good_multipart", multipart(png), mp, 200, label))
        else:
            out.append(Case("good", png, "image/png", 200, label))
    return out


@dataclass
class Tally:
    """What the clients saw, per kind of request."""

    sent: Counter = field(default_factory=Counter)
    as_expected: Counter = field(default_factory=Counter)
    wrong_status: Counter = field(default_factory=Counter)  # "kind: status"
    server_errors: int = 0  # 5xx answers
    wrong_labels: int = 0  # good images answered with another class
    lost: int = 0  # requests that got no complete answer before the stop
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, case: Case, status: int, body: bytes, seconds: float) -> None:
        """Count one answer against what ``case`` expects."""
        ok = status == case.status
        wanted = f'"label":"{case.label}"'.encode()
        mislabelled = ok and case.label is not None and wanted not in body
        with self.lock:
            self.wrong_labels += mislabelled
            ok = ok and not mislabelled
            self.sent[case.kind] += 1
            self.latencies.append(seconds)
            if ok:
                self.as_expected[case.kind] += 1
            else:
                self.wrong_status[f"{case.kind}: {status}"] += status != case.status
            self.server_errors += status >= 500

    @property
    def total(self) -> int:
        """Requests answered."""
        return sum(self.sent.values())


def _fast_client(port: int, cases: list[Case], seed: int, tally: Tally, stop: Stop) -> None:
    """Post shuffled cases back to back on one keep-alive connection until stopped."""
    rng = np.random.default_rng(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.clients.is_set():
        case = cases[int(rng.integers(len(cases)))]
        t = time.perf_counter()
        try:
            conn.request("POST", "/predict", case.body, {"Content-Type": case.content_type})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            if stop.server.is_set():
                return  # the server is going away: refused and reset connections expected
            with tally.lock:
                tally.lost += 1
            continue
        tally.record(case, resp.status, body, time.perf_counter() - t)


def slow_request(port: int, case: Case, delay: float, timeout: float) -> tuple[int, bytes]:
    """Send ``case`` one byte every ``delay`` s; (status, body), or (0, b"") if cut off."""
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {case.content_type}\r\n"
        f"Content-Length: {len(case.body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        s.setblocking(False)
        answer = b""
        for i in range(len(case.body)):
            try:
                s.send(case.body[i : i + 1])
            except BlockingIOError:
                pass
            except OSError:
                break  # the server answered and closed (too slow)
            try:
                answer += s.recv(65536)
                break  # an early answer: the server gave up on us
            except BlockingIOError:
                time.sleep(delay)
        s.setblocking(True)
        s.settimeout(timeout)
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except OSError:
            pass
    if not answer.startswith(b"HTTP/1.1 "):
        return 0, answer
    return int(answer[9:12]), answer.split(b"\r\n\r\n", 1)[-1]


def _slow_client(port: int, case: Case, delay: float, tally: Tally, stop: Stop) -> None:
    """Send ``case`` slowly, again and again, until stopped."""
    while not stop.clients.is_set():
        t = time.perf_counter()
        try:
            status, body = slow_request(port, case, delay, timeout=60)
        except OSError:
            status, body = 0, b""
        if status == 0:
            if stop.server.is_set():
                return
            with tally.lock:
                tally.lost += 1
            continue
        tally.record(case, status, body, time.perf_counter() - t)


@dataclass
class Stop:
    """Two stops: the server is going away (errors expected), and the clients end."""

    server: threading.Event = field(default_factory=threading.Event)
    clients: threading.Event = field(default_factory=threading.Event)


def process_tree(pid: int) -> list[int]:
    """Process ``pid`` and its living descendants (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
            children = [int(c) for t in tasks for c in (t / "children").read_text().split()]
        except OSError:
            continue  # the process ended meanwhile
        found.append(p)
        todo += children
    return found


def tree_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and its descendants (Linux /proc)."""
    total = 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(status.split("VmRSS:")[1].split()[0]) * 1024
        except (OSError, IndexError):
            continue  # the process ended meanwhile
    return total


@dataclass
class Soak:
    """A running soak: start it, let it run, stop it, read the tally."""

    port: int
    cases: list[Case]  # what the fast clients mix
    slow: list[tuple[Case, float]]  # (case, seconds per byte) for each slow client
    clients: int = 4
    tally: Tally = field(default_factory=Tally)
    stop: Stop = field(default_factory=Stop)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        """Start the fast and slow clients."""
        targets = [(_fast_client, (self.port, self.cases, k)) for k in range(self.clients)]
        targets += [(_slow_client, (self.port, c, d)) for c, d in self.slow]
        for fn, args in targets:
            t = threading.Thread(target=fn, args=(*args, self.tally, self.stop), daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self, timeout: float = 60) -> list[threading.Thread]:
        """Stop the clients; the threads that did not end within ``timeout`` (hung)."""
        self.stop.clients.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t for t in self.threads if t.is_alive()]
