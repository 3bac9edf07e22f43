"""The IDX parser on crafted bytes, checksums, sources, downloads and the split."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmnist import data, sources
from fmnist.data import DataError, FileSpec, parse_idx
from fmnist.errors import ConfigError


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    """Encode a uint8 array as IDX."""
    magic = magic if magic is not None else 0x0800 + arr.ndim
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_parse_idx_images_and_labels():
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(imgs), (2, 3, 4)), imgs)
    labels = np.array([9, 0, 3], dtype=np.uint8)
    assert np.array_equal(parse_idx(idx_bytes(labels)), labels)


@pytest.mark.parametrize(
    ("raw", "expected", "message"),
    [
        (b"", None, "too short"),
        (struct.pack(">I", 0x00000903) + b"\0" * 12, None, "magic"),  # wrong element type
        (struct.pack(">I", 0x01000803) + b"\0" * 12, None, "magic"),  # non-zero lead bytes
        (struct.pack(">I", 0x00000800), None, "magic"),  # zero dimensions
        (struct.pack(">II", 0x00000803, 2), None, "header truncated"),
        (idx_bytes(np.zeros((2, 3, 3), np.uint8)), (2, 28, 28), "dimensions"),
        (idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-1], None, "truncated"),
        (idx_bytes(np.zeros((2, 3, 3), np.uint8)) + b"\0", None, "trailing"),
        # A header claiming 10**12 items is refused by the length check, allocating nothing.
        (struct.pack(">IIII", 0x00000803, 10**6, 1000, 1000), None, "truncated"),
        # No items, but a shape numpy cannot even build (found by the fuzz test below).
        (struct.pack(">IIII", 0x00000803, 0, 3735617536, 7), None, "describes no data"),
    ],
)
def test_parse_idx_rejects_bad_input(raw, expected, message):
    with pytest.raises(DataError, match=message):
        parse_idx(raw, expected)


def small_spec(tmp_path: Path, name="t10k-labels-idx1-ubyte") -> tuple[FileSpec, bytes]:
    labels = np.arange(10, dtype=np.uint8)
    raw = idx_bytes(labels)
    return FileSpec(name, hashlib.sha256(raw).hexdigest(), (10,)), raw


def test_read_file_checks_sha256_and_says_how_to_fix(tmp_path):
    spec, raw = small_spec(tmp_path)
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(raw))
    assert sources.read_file(good, spec).tolist() == list(range(10))
    bad = tmp_path / "bad"
    bad.write_bytes(raw[:-1] + b"\x07")
    with pytest.raises(DataError) as e:
        sources.read_file(bad, spec)
    msg = str(e.value)
    assert "bad" in msg and spec.sha256 in msg and "fmnist data fetch" in msg
    assert "dataset-fashion-mnist" in msg


def test_truncated_gzip_is_a_clear_error(tmp_path):
    spec, raw = small_spec(tmp_path)
    f = tmp_path / "x.gz"
    f.write_bytes(gzip.compress(raw)[:-5])
    with pytest.raises(DataError, match="gzip"):
        sources.read_file(f, spec)


def test_explicit_dir_wins_and_bad_file_there_is_reported_not_moved(tmp_path, isolated_cache):
    name = "t10k-labels-idx1-ubyte"
    debian = sources.locate(name, download_ok=False)
    assert debian.source in ("debian", "cache")
    (tmp_path / f"{name}.gz").write_bytes(debian.path.read_bytes())
    found = sources.locate(name, tmp_path, download_ok=False)
    assert found.source == "explicit" and np.array_equal(found.array, debian.array)
    (tmp_path / f"{name}.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=name):
        sources.locate(name, tmp_path, download_ok=False)
    assert (tmp_path / f"{name}.gz").exists()


def test_explicit_dir_that_is_not_a_folder_is_an_error_not_skipped(tmp_path, monkeypatch):
    name = "t10k-labels-idx1-ubyte"
    with pytest.raises(DataError, match=r"typo' given by --data-dir .*does not exist.*Fix: "):
        sources.locate(name, tmp_path / "typo", download_ok=False)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("FMNIST_DATA_DIR", str(tmp_path / "afile"))
    with pytest.raises(DataError, match="afile' given by FMNIST_DATA_DIR is a file"):
        sources.locate(name, download_ok=False)


def test_corrupt_cache_file_is_moved_aside_never_used(isolated_cache, capsys):
    name = "t10k-labels-idx1-ubyte"
    isolated_cache.mkdir(parents=True)
    (isolated_cache / f"{name}.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + b"\0" * 8))
    found = sources.locate(name, download_ok=False)
    assert found.source == "debian"
    assert not (isolated_cache / f"{name}.gz").exists()
    assert len(list(isolated_cache.glob(f"{name}.gz.corrupt-*"))) == 1
    assert "moved aside" in capsys.readouterr().err


def test_missing_everywhere_lists_sources_and_fix(tmp_path, isolated_cache):
    with pytest.raises(DataError) as e:
        sources.locate(
            "t10k-labels-idx1-ubyte", download_ok=False, debian_dir=tmp_path / "no-debian"
        )
    msg = str(e.value)
    assert "user cache" in msg and "no-debian" in msg and "offline" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg


class _Server:
    """A loopback HTTP server serving ``files`` (name -> bytes), counting requests."""

    def __init__(self, files: dict[str, bytes], fail_first: int = 0):
        self.files, self.fail_first, self.requests = files, fail_first, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                body = outer.files.get(self.path.lstrip("/"))
                if body is None or outer.requests <= outer.fail_first:
                    self.send_error(404 if body is None else 503)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_download_verifies_retries_and_is_atomic(tmp_path):
    spec, raw = small_spec(tmp_path)
    server = _Server({f"{spec.name}.gz": gzip.compress(raw)}, fail_first=1)
    try:
        path = sources.download(spec, tmp_path / "cache", [server.url], progress=False)
    finally:
        server.close()
    assert server.requests == 2  # one 503, one retry
    assert path.name == f"{spec.name}.gz"
    assert sources.read_file(path, spec).tolist() == list(range(10))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [path.name]


def test_download_of_wrong_bytes_leaves_nothing_and_tries_next_mirror(tmp_path):
    spec, raw = small_spec(tmp_path)
    bad = _Server({f"{spec.name}.gz": gzip.compress(raw + b"x")})
    good = _Server({f"{spec.name}.gz": gzip.compress(raw)})
    try:
        path = sources.download(spec, tmp_path / "c", [bad.url, good.url], progress=False)
        assert bad.requests == 1  # a file with the wrong checksum is not fetched again
        assert path.exists()
        with pytest.raises(DataError, match="trailing|SHA-256"):
            sources.download(spec, tmp_path / "d", [bad.url], progress=False, retries=2)
    finally:
        bad.close()
        good.close()
    assert list((tmp_path / "d").iterdir()) == []


def test_split_is_deterministic_disjoint_and_complete():
    tr, va = data.split_indices(1000, 0.2, seed=3)
    tr2, va2 = data.split_indices(1000, 0.2, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert len(va) == 200 and len(tr) == 800
    assert not set(tr) & set(va)
    assert sorted(np.concatenate([tr, va])) == list(range(1000))
    assert not np.array_equal(va, data.split_indices(1000, 0.2, seed=4)[1])


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    magic=st.one_of(st.sampled_from([0x801, 0x803]), st.integers(0, 2**32 - 1)),
    dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 40), min_size=0, max_size=4),
    body=st.binary(max_size=2000),
    cut=st.integers(0, 40),
)
def test_parse_idx_fuzz_returns_array_or_documented_error(magic, dims, body, cut):
    """Random headers and lengths: a valid array or DataError, never anything else.

    Headers may claim up to (2**32)**4 items; the length check refuses them before any
    allocation, so this stays fast and small.
    """
    raw = (struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + body)[
        : max(0, 4 + 4 * len(dims) + len(body) - cut)
    ]
    try:
        arr = parse_idx(raw)
    except DataError:
        return
    assert arr.dtype == np.uint8 and arr.nbytes == len(raw) - 4 - 4 * arr.ndim


@pytest.mark.parametrize(("n", "val_split"), [(2000, 0.0001), (2, 0.1), (10, 0.99), (1, 0.2)])
def test_a_split_that_leaves_nothing_on_one_side_is_refused(n, val_split):
    """An empty split trained to a NaN loss that was blamed on the learning rate."""
    with pytest.raises(ConfigError, match=r"both need 1 or more: change --val-split or --limit"):
        data.split_indices(n, val_split, seed=0)
    tr, va = data.split_indices(n, 0.0, seed=0)  # no validation asked for: all training
    assert len(tr) == n and len(va) == 0
