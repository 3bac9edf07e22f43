"""The HTTP API with FastAPI's TestClient: every endpoint, every bad input; torch-free serving."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pgserver import free_port
from PIL import Image

from fmnist import formats
from fmnist.errors import ConfigError
from fmnist.images import render_photo, to_model_input, to_png
from fmnist.predict import Classifier
from fmnist.serve import ServeLimits, create_app
from fmnist.serve.soak import png_bomb


@pytest.fixture(scope="module")
def clf(small_run) -> Classifier:
    return Classifier.load(small_run)


@pytest.fixture(scope="module")
def client(clf):
    with TestClient(create_app(clf)) as c:
        yield c


@pytest.fixture(scope="module")
def photo(fashion) -> bytes:
    """A trouser from the test set rendered as a JPEG photo."""
    _, (x_test, y_test) = fashion
    return render_photo(x_test[np.flatnonzero(y_test == 1)[0]], np.random.default_rng(0))


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def check_prediction(body: dict, clf: Classifier, source: bytes | np.ndarray, k: int = 3) -> None:
    """The server's answer for the image ``source`` is the Classifier's, shifts and all."""
    assert body["label"] in clf.classes and body["label"] == clf.classes[body["class_index"]]
    assert body["model"] == clf.model_name
    assert len(body["top_k"]) == k and body["top_k"][0]["label"] == body["label"]
    assert body["probability"] == body["top_k"][0]["probability"] == max(body["probabilities"])
    assert sum(body["probabilities"]) == pytest.approx(1, abs=1e-6)
    np.testing.assert_array_equal(decode_data_url(body["image"]), to_model_input(source))
    expected = clf.predict(source)
    assert body["label"] == expected.label[0]
    np.testing.assert_allclose(body["probabilities"], expected.probabilities[0], atol=1e-6)
    assert body["unsure"] is bool(body["probability"] < clf.min_confidence[body["class_index"]])


# ---------------------------------------------------------------- endpoints


def test_health_metadata_page_and_docs(client, clf):
    assert client.get("/health").json() == {
        "status": "ok",
        "model": clf.model_name,
        "backend": "torch",
    }
    meta = client.get("/metadata").json()
    assert meta["classes"] == list(clf.classes) and meta["model"] == clf.model_name
    assert meta["input"]["width"] == meta["input"]["height"] == 28
    assert meta["version"] and meta["limits"]["max_upload_bytes"] == 10 * 2**20
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="canvas"' in page.text and 'type="file"' in page.text
    assert "<script src" not in page.text and "http://" not in page.text  # no CDN
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/predict/batch", "/health", "/metadata"} <= set(paths)
    assert "multipart/form-data" in paths["/predict"]["post"]["requestBody"]["content"]


def test_predict_multipart_and_raw_body(client, clf, photo):
    r = client.post("/predict", files={"file": ("trouser.jpg", photo, "image/jpeg")})
    assert r.status_code == 200, r.text
    check_prediction(r.json(), clf, photo)
    assert r.json()["filename"] == "trouser.jpg"
    for ctype in ("image/jpeg", "application/octet-stream", None):
        headers = {"content-type": ctype} if ctype else {}
        r = client.post("/predict?top_k=5", content=photo, headers=headers)
        assert r.status_code == 200, (ctype, r.text)
        check_prediction(r.json(), clf, photo, k=5)


def test_heic_uploads_are_refused_unless_the_server_takes_them(client, clf, photo):
    formats.decoders()  # registers pillow-heif (the heic extra), whose encoder makes the HEIC
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(buf, "HEIF", quality=95)
    heic = buf.getvalue()
    upload = {"file": ("IMG_0001.HEIC", heic, "image/heic")}
    r = client.post("/predict", files=upload)  # by default: a crafted file could fake its size
    assert r.status_code == 415 and r.json()["error"] == "not_an_image", r.text
    assert "is a HEIC/HEIF photo, which is not decoded here" in r.json()["detail"]
    assert "started with --heif" in r.json()["detail"]
    with TestClient(create_app(clf, ServeLimits(heif=True))) as c:  # fmnist serve --heif
        r = c.post("/predict", files=upload)
    assert r.status_code == 200, r.text
    check_prediction(r.json(), clf, heic)
    assert np.abs(to_model_input(heic).astype(int) - to_model_input(photo)).mean() <= 6


def test_predict_batch_keeps_order_and_reports_bad_files(client, clf, fashion, photo):
    _, (x_test, _) = fashion
    files = [
        ("files", ("a.png", to_png(x_test[0]), "image/png")),
        ("files", ("bad.png", b"not an image", "image/png")),
        ("files", ("c.jpg", photo, "image/jpeg")),
    ]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 3 and body["failed"] == 1 and body["model"] == clf.model_name
    a, bad, c = body["results"]
    assert [a["filename"], bad["filename"], c["filename"]] == ["a.png", "bad.png", "c.jpg"]
    check_prediction(a, clf, x_test[0])
    check_prediction(c, clf, photo)
    assert bad["error"] == "not_an_image" and "bad.png is not an image" in bad["detail"]


def test_a_photo_with_no_garment_is_an_unsure_answer_not_an_error(client, clf):
    wall = to_png(np.full((120, 160), 250, np.uint8))  # a plain wall: nothing to classify
    r = client.post("/predict", files={"file": ("wall.png", wall, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] is None and body["unsure"] is True and body["filename"] == "wall.png"
    assert "No garment found" in body["reason"] and body["model"] == clf.model_name
    r = client.post("/predict/batch", files=[("files", ("wall.png", wall, "image/png"))] * 2)
    assert r.json()["failed"] == 0 and [x["label"] for x in r.json()["results"]] == [None] * 2


# ---------------------------------------------------------------- bad requests

NOISE = to_png(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
TRUNCATED = NOISE[: len(NOISE) // 2]  # the pixel data stops halfway


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "message"),
    [
        ({"content": b"hello", "headers": {"content-type": "image/png"}}, 415, "not_an_image",
         "the upload is not an image"),
        ({"content": TRUNCATED, "headers": {"content-type": "image/png"}}, 422, "truncated",
         "truncated or corrupt"),
        ({"content": b"", "headers": {"content-type": "image/png"}}, 400, "empty", "is empty"),
        ({"files": {"file": ("x.png", b"", "image/png")}}, 400, "empty", "x.png is empty"),
        ({"content": png_bomb(), "headers": {"content-type": "image/png"}}, 413,
         "too_many_pixels", "more than the limit of 25,000,000 pixels"),
        ({"json": {"image": "..."}}, 415, "unsupported_media_type",
         "Content-Type application/json is not accepted"),
        ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 415,
         "unsupported_media_type", "expected multipart/form-data with the field 'file'"),
        ({"content": b"--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nab",
          "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400,
         "malformed_multipart", "ends before its closing boundary"),
        ({"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=x"}},
         400, "malformed_multipart", "malformed multipart body"),
        ({"content": b"--x--", "headers": {"content-type": "multipart/form-data"}}, 400,
         "malformed_multipart", "has no boundary parameter"),
        ({"files": {"photo": ("x.png", b"abc", "image/png")}}, 422, "missing_field",
         "no field 'file' (found ['photo'])"),
        ({"files": [("file", ("a.png", b"a", "image/png")), ("file", ("b.png", b"b", "image/x"))]},
         400, "too_many_files", "use /predict/batch"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_json_4xx_naming_the_problem(client, kwargs, status, code, message):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code
    assert message in r.json()["detail"]


MULTIPART_X = "multipart/form-data; boundary=x"


def test_bad_parameters_and_batch_requests(client, photo):
    r = client.post("/predict?top_k=11", content=photo)
    assert r.status_code == 422 and r.json()["error"] == "bad_top_k"
    r = client.post("/predict?top_k=many", content=photo)
    assert r.status_code == 422 and r.json()["error"] == "bad_parameter"
    assert "top_k" in r.json()["detail"] and "'many'" in r.json()["detail"]
    r = client.post("/predict/batch", content=photo, headers={"content-type": "image/jpeg"})
    assert r.status_code == 415 and "one or more fields 'files'" in r.json()["detail"]
    r = client.post("/predict/batch", files={"file": ("a.jpg", photo, "image/jpeg")})
    assert r.status_code == 422 and r.json()["error"] == "missing_field"
    # A plain form value where files belong (what schemathesis sent): the request is wrong,
    # so a 4xx for the whole batch, not a 200 with a per-file error.
    plain = b'--x\r\nContent-Disposition: form-data; name="files"\r\n\r\n{}\r\n--x--\r\n'
    for path, field in (("/predict/batch", "files"), ("/predict", "file")):
        body = plain.replace(b'"files"', f'"{field}"'.encode())
        r = client.post(path, content=body, headers={"content-type": MULTIPART_X})
        assert r.status_code == 422 and r.json()["error"] == "not_a_file", r.text
        assert f"part 1 of field '{field}' is a plain form value" in r.json()["detail"]


def test_limits_each_give_a_4xx_that_states_the_limit(clf, photo):
    limits = ServeLimits(max_upload_bytes=5_000, max_pixels=10_000, max_files=2,
                         max_batch_bytes=12_000)  # fmt: skip
    with TestClient(create_app(clf, limits)) as c:
        big = bytes(6_000)
        r = c.post("/predict", content=big, headers={"content-type": "image/png"})
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        assert "limit of 5,000 bytes" in r.json()["detail"]
        small = to_png(np.zeros((120, 120), np.uint8))  # 14,400 pixels in a few hundred bytes
        r = c.post("/predict", files={"file": ("s.png", small, "image/png")})
        assert r.status_code == 413 and "more than the limit of 10,000 pixels" in r.json()["detail"]
        r = c.post("/predict", files={"file": ("p.jpg", photo, "image/jpeg")})  # > 5,000 bytes
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        three = [("files", (f"{i}.png", small, "image/png")) for i in range(3)]
        r = c.post("/predict/batch", files=three)
        assert r.status_code == 413 and "3 files in field 'files', the limit is 2" in r.text
        two = [("files", (f"{i}.jpg", photo, "image/jpeg")) for i in range(2)]
        r = c.post("/predict/batch", files=two)
        assert r.status_code == 413 and "exceeds the limit of 12,000 bytes" in r.text
    with TestClient(create_app(clf, ServeLimits(timeout=1e-6))) as c:
        r = c.post("/predict", content=photo, headers={"content-type": "image/jpeg"})
        assert r.status_code == 408 and r.json()["error"] == "timeout"
        assert "longer than the limit of 1e-06 s" in r.json()["detail"]


def test_server_stays_up_after_bad_requests(client, photo):
    for body in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff" + bytes(100), png_bomb()):
        assert client.post("/predict", content=body).status_code in (400, 413, 415, 422)
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/predict", content=photo).status_code == 200


def test_uploads_never_touch_the_disk(client, monkeypatch, clf):
    import tempfile

    import starlette.formparsers

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr(starlette.formparsers, "MultiPartParser", refuse)
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    noise[:100] = noise[-100:] = noise[:, :100] = noise[:, -100:] = 255  # a white border
    big = io.BytesIO()
    Image.fromarray(noise).save(big, "PNG")  # ~3 MB, over Starlette's 1 MB spooling limit
    assert big.tell() > 2 * 2**20
    r = client.post("/predict", files={"file": ("big.png", big.getvalue(), "image/png")})
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- without torch

NO_TORCH = textwrap.dedent(
    """
    import importlib.abc, io, json, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")

    sys.meta_path.insert(0, BlockTorch())
    onnx_file, run_dir, image = sys.argv[1:]

    import fmnist.images, fmnist.predict, fmnist.serve
    from fastapi.testclient import TestClient
    from fmnist.cli import main
    from fmnist.predict import Classifier

    out = {}
    clf = Classifier.load(onnx_file)
    out["backend"] = clf.backend
    out["label"] = clf.predict(image).label[0]
    out["run_dir_backend"] = Classifier.load(run_dir).backend  # falls back to model.onnx
    with TestClient(fmnist.serve.create_app(onnx_file)) as c:
        out["api_label"] = c.post("/predict", content=open(image, "rb").read()).json()["label"]
    out["cli"] = main(["predict", onnx_file, image])
    out["torch_loaded"] = any(m == "torch" or m.startswith("torch.") for m in sys.modules)
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def onnx_run(small_run, tmp_path_factory):
    """A run directory holding only the small run's model.onnx."""
    from fmnist.checkpoint import load_model
    from fmnist.export import to_onnx

    model, meta = load_model(small_run)
    run_dir = tmp_path_factory.mktemp("onnx-run")
    (run_dir / "model.onnx").write_bytes(to_onnx(model, meta))
    return run_dir


def test_images_predict_and_serve_run_without_torch(tmp_path, onnx_run, fashion, clf):
    _, (x_test, _) = fashion
    image = tmp_path / "shoe.png"
    image.write_bytes(to_png(x_test[0]))
    r = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(onnx_run / "model.onnx"), str(onnx_run), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    expected = clf.predict(x_test[:1]).label[0]
    assert out == {
        "backend": "onnx",
        "label": expected,
        "run_dir_backend": "onnx",
        "api_label": expected,
        "cli": 0,
        "torch_loaded": False,
    }


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on ``port`` (Linux's /proc/net/tcp, state 0A)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    fields = [line.split() for line in lines]
    return sum(f[1].endswith(f":{port:04X}") and f[3] == "0A" for f in fields)


@pytest.mark.parametrize(("backend", "workers"), [("onnx", 1), ("onnx", 2), ("torch", 2)])
def test_cli_serve(onnx_run, small_run, tmp_path, capsys, fashion, clf, backend, workers):
    """--backend torch serves a run directory by PyTorch: its workers are forked after torch
    has loaded."""
    from fmnist.cli import main

    model = onnx_run / "model.onnx" if backend == "onnx" else small_run

    port = free_port()
    cmd = [sys.executable, "-m", "fmnist", "serve", str(model), "--port",
           str(port), "--max-upload-mb", "0.001", "--workers", str(workers),
           "--backend", "auto" if backend == "onnx" else "torch"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                health = httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "fmnist serve did not start"
                time.sleep(0.2)
        assert health.json() == {"status": "ok", "model": "seed", "backend": backend}
        limits = httpx2.get(f"http://127.0.0.1:{port}/metadata").json()["limits"]
        assert limits["max_upload_bytes"] == 1048  # --max-upload-mb 0.001: in every worker
        image = fashion[1][0][0]
        if sys.platform == "linux":  # one listening socket per worker
            assert listening_sockets(port) == workers
        busy = ["serve", str(onnx_run / "model.onnx"), "--port", str(port), "--workers", "2"]
        assert main(busy) == 2  # the port is taken: refused, not shared
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
        for _ in range(4):  # several requests, so that both workers answer some
            r = httpx2.post(f"http://127.0.0.1:{port}/predict", content=to_png(image))
            assert r.status_code == 200, r.text
            assert r.json()["label"] == clf.predict(image[None]).label[0]
    finally:
        proc.terminate()
        proc.wait(10)
    log = proc.stdout.read().decode()
    assert log.count('"POST /predict HTTP/1.1" 200') == 4, log  # an access log in every mode
    assert main(["serve", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx does not exist" in capsys.readouterr().err


def test_workers_without_gunicorn_is_a_clear_error(onnx_run, monkeypatch):
    from fmnist.serve import run

    monkeypatch.setitem(sys.modules, "uvicorn_worker", None)  # as if not installed
    with pytest.raises(ConfigError, match="--workers 2 needs gunicorn and uvicorn-worker"):
        run(onnx_run / "model.onnx", port=0, workers=2)


def test_serve_extra_does_not_require_torch():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    needed = (
        pyproject["project"]["dependencies"]
        + pyproject["project"]["optional-dependencies"]["serve"]
    )
    assert not any(
        d.split()[0].lower().startswith(("torch", "onnxruntime-gpu", "nvidia")) for d in needed
    )


def test_without_metrics_there_is_no_metrics_endpoint_and_predictions_work(clf, photo, monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # not needed without metrics
    with TestClient(create_app(clf, metrics=False)) as c:
        assert c.get("/metrics").status_code == 404
        assert "/metrics" not in c.get("/openapi.json").json()["paths"]
        r = c.post("/predict", content=photo, headers={"content-type": "image/jpeg"})
        assert r.status_code == 200 and r.json()["label"] == "Trouser"
        assert c.post("/predict", content=b"hello").status_code == 415  # errors as before


def test_serve_without_metrics_makes_no_metrics_folder(onnx_run, monkeypatch, caplog):
    import os

    import fmnist.serve

    seen = []
    monkeypatch.setattr(fmnist.serve, "multiprocess_dir", lambda: pytest.fail("metrics folder"))
    monkeypatch.setattr(
        fmnist.serve, "_uvicorn", lambda *a: seen.append(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    )
    with caplog.at_level("INFO"):
        fmnist.serve.run(onnx_run / "model.onnx", port=free_port(), workers=1, metrics=False)
    assert seen == [None] and "metrics of all workers" not in caplog.text


@pytest.fixture
def serve_kwargs(monkeypatch) -> dict:
    """What `fmnist serve` passes to fmnist.serve.run, which is replaced: nothing listens."""
    import fmnist.serve

    seen: dict = {}
    monkeypatch.setattr(fmnist.serve, "run", lambda model, **kwargs: seen.update(kwargs))
    return seen


@pytest.mark.parametrize(("flags", "heif"), [([], False), (["--heif"], True)])
def test_cli_serve_takes_heic_and_avif_only_with_heif(serve_kwargs, flags, heif):
    from fmnist.cli import main

    seen = serve_kwargs
    assert main(["serve", "photo", *flags]) == 0
    assert seen["limits"].heif is heif


def test_cli_serve_takes_the_rule_flags_of_predict(serve_kwargs):
    from fmnist.cli import main

    seen = serve_kwargs
    assert main(["serve", "photo"]) == 0
    assert seen["rule"] == {"min_confidence": None, "photo_offsets": None, "photo_shifts": None}
    flags = ["--min-confidence", "0.7", "--no-photo-offsets", "--no-photo-shifts"]
    assert main(["serve", "photo", *flags]) == 0
    assert seen["rule"] == {"min_confidence": 0.7, "photo_offsets": 0, "photo_shifts": False}


def test_serve_run_serves_with_the_rule_given(monkeypatch):
    import fmnist.serve

    served = []
    monkeypatch.setattr(fmnist.serve, "create_app", lambda clf, *a: served.append(clf))
    monkeypatch.setattr(fmnist.serve, "_uvicorn", lambda *a: None)
    port = free_port()
    fmnist.serve.run("photo", port=port, workers=1)  # the bundled model's own rule
    rule = {"min_confidence": 0.7, "photo_offsets": 0, "photo_shifts": False}
    fmnist.serve.run("photo", port=port, workers=1, rule=rule)
    own, given = served
    assert own.photo_shifts is True and np.any(own.photo_offsets != 0)
    assert len(set(own.min_confidence.tolist())) > 1  # one threshold per class
    assert given.photo_shifts is False and np.all(given.photo_offsets == 0)
    np.testing.assert_array_equal(given.min_confidence, 0.7)
    workers = []  # several workers: gunicorn's each load the Served it is given
    monkeypatch.setattr(fmnist.serve, "_gunicorn", lambda served, *a: workers.append(served))
    fmnist.serve.run("photo", port=port, workers=2, rule=rule)
    assert (workers[0].min_confidence, workers[0].photo_offsets) == (0.7, 0)
    assert workers[0].load().photo_shifts is False


def test_cli_predict_min_confidence_marks_answers_unsure(photo, tmp_path, capsys):
    from fmnist.cli import main

    jpg = tmp_path / "photo.jpg"
    jpg.write_bytes(photo)
    for flags, unsure in (([], False), (["--min-confidence", "1"], True)):
        assert main(["predict", str(jpg), "--model", "default", "--json", *flags]) == 0
        assert json.loads(capsys.readouterr().out)["unsure"] is unsure
