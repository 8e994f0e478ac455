"""The HTTP API (/celebbasis/v1) through FastAPI's TestClient, on a tiny SD1 pipeline."""

from __future__ import annotations

import base64
import contextlib
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")  # TestClient needs it

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from celebbasis_ext.service import CelebBasisService, ServiceSettings  # noqa: E402
from celebbasis_ext.webui.api import mount, parse_credentials  # noqa: E402

from conftest import tiny_pipeline  # noqa: E402
from helpers import b64_image, needs_dlib, noise_photo, small_names_file  # noqa: E402


class RecordingLock:
    """The host's queue lock, counting who held it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entries = 0

    @contextlib.contextmanager
    def __call__(self):
        with self.lock:
            self.entries += 1
            yield


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from celebbasis_ext.diffusers_adapter import DiffusersAdapter

    tmp = tmp_path_factory.mktemp("api")
    adapter = DiffusersAdapter(tiny_pipeline("tiny-sd1"), model_name="tiny-sd1")
    settings = ServiceSettings(face_encoder="none", names_file=str(small_names_file(tmp)),
                               basis_cache_dir=str(tmp / "basis"), tune_defaults={"pool_size": 2})
    service = CelebBasisService(lambda: adapter, tmp / "embeddings" / "celebbasis", settings)
    app = FastAPI()
    lock = RecordingLock()
    mount(app, service, lock=lock)
    return TestClient(app), service, lock


def assert_one_line_error(response, status):
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail
    return detail


def test_tune_list_delete(api):
    client, service, lock = api
    entries = lock.entries
    response = client.post("/celebbasis/v1/tune", json={"images": [b64_image()], "name": "zed_api", "steps": 2,
                                                        "seed": 3, "resolution": 96})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"]["resolution"] == "96"  # the training size asked for, recorded in the file
    assert body["name"] == body["token"] == "zed_api" and body["family"] == "sd1"
    assert Path(body["file"]).is_file() and Path(body["file"]).parent == service.out_dir
    assert body["metadata"]["steps"] == "2" and body["metadata"]["seed"] == "3" and body["likeness"] is None
    assert lock.entries == entries + 1

    listed = client.get("/celebbasis/v1/identities").json()["identities"]
    assert [item["name"] for item in listed] == ["zed_api"] and listed[0]["base_model"] == "tiny-sd1"

    again = client.post("/celebbasis/v1/tune", json={"images": [b64_image()], "name": "zed_api", "steps": 2})
    assert "zed_api.safetensors already exists" in assert_one_line_error(again, 400)

    # data: URL prefix accepted; overwrite replaces
    data_url = "data:image/png;base64," + b64_image(noise_photo(4, 96))
    response = client.post("/celebbasis/v1/tune", json={"images": [data_url], "name": "zed_api", "steps": 2,
                                                        "overwrite": True, "preset": "Fast"})
    assert response.status_code == 200, response.text

    response = client.delete("/celebbasis/v1/identities/zed_api")
    assert response.status_code == 200 and response.json()["deleted"] == "zed_api"
    assert not Path(body["file"]).exists()
    assert "no identity called 'zed_api'" in assert_one_line_error(client.delete("/celebbasis/v1/identities/zed_api"),
                                                                     404)
    assert "may only use letters, digits" in assert_one_line_error(
        client.delete("/celebbasis/v1/identities/bad name"), 400)
    assert client.get("/celebbasis/v1/identities").json()["identities"] == []


@pytest.mark.parametrize("body, status, words", [
    ({"images": [], "name": "zed"}, 400, "images is empty"),
    ({"images": ["@@not base64@@"], "name": "zed"}, 400, "images[0] is not valid base64"),
    ({"images": [""], "name": "zed"}, 400, "images[0] is empty"),
    ({"images": [base64.b64encode(b"hello, I am text").decode()], "name": "zed"}, 400, "not an image file"),
    ({"images": [b64_image(noise_photo(size=32))], "name": "zed"}, 400, "too small (32x32 px)"),
    ({"images": ["IMG"] * 17, "name": "zed"}, 400, "17 images sent; at most 16"),
    ({"images": ["IMG"], "name": "../escape"}, 400, "must not contain path separators"),
    ({"images": ["IMG"], "name": ""}, 400, "the name is empty"),
    ({"images": ["IMG"], "name": "a" * 65}, 400, "65 characters long; use at most 64"),
    ({"images": ["IMG"], "name": "zed", "steps": 0}, 400, "steps must be a whole number from 1 to 20000, not 0"),
    ({"images": ["IMG"], "name": "zed", "steps": 10 ** 9}, 400, "from 1 to 20000, not 1000000000"),
    ({"images": ["IMG"], "name": "zed", "learning_rate": -1}, 400, "learning rate must be a number in (0, 1]"),
    ({"images": ["IMG"], "name": "zed", "mode": "magic"}, 400, "unknown mode 'magic'"),
    ({"images": ["IMG"], "name": "zed", "resolution": 100}, 400, "resolution must be a multiple of 8"),
    ({"images": ["IMG"], "name": "zed", "mode": "paper"}, 400, "face encoder 'none' works only with mode 'direct'"),
    ({"images": ["IMG"], "name": "zed", "face_encoder": "face++"}, 400, "unknown face encoder 'face++'"),
    ({"images": ["IMG"], "name": "zed", "preset": "Ultra"}, 400, "unknown preset 'Ultra': choose one of Fast"),
    ({"images": ["IMG"], "name": "zed", "face_index": -1}, 400, "face index must be a whole number from 0"),
    ({"images": ["IMG"], "name": "zed", "steps": "many"}, 422, "invalid request: steps:"),
    ({"images": ["IMG"], "name": "zed", "stepz": 3}, 422, "invalid request: stepz: Extra inputs are not permitted"),
    ({"images": "IMG", "name": "zed"}, 422, "invalid request: images:"),
    ({"name": "zed"}, 422, "invalid request: images: Field required"),
])
def test_bad_tune_requests_get_4xx_with_one_line(api, body, status, words):
    client, service, _ = api
    if body.get("images") and body["images"] != "IMG":
        body = {**body, "images": [b64_image() if item == "IMG" else item for item in body["images"]]}
    assert words in assert_one_line_error(client.post("/celebbasis/v1/tune", json=body), status)
    assert not service.out_dir.exists() or not list(service.out_dir.glob("*.safetensors"))


def test_malformed_json_and_nan(api):
    client, _, _ = api
    response = client.post("/celebbasis/v1/tune", content=b"{not json", headers={"content-type": "application/json"})
    assert "invalid request" in assert_one_line_error(response, 422) and "JSON" in response.json()["detail"]
    nan = b'{"images": ["' + b64_image().encode() + b'"], "name": "zed", "learning_rate": NaN}'
    response = client.post("/celebbasis/v1/tune", content=nan, headers={"content-type": "application/json"})
    assert "learning rate must be a number in (0, 1], not nan" in assert_one_line_error(response, 400)


def test_runtime_failure_is_500_with_one_line(tmp_path):
    def broken():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore lines")

    service = CelebBasisService(broken, tmp_path / "out", ServiceSettings(face_encoder="none"))
    app = FastAPI()
    mount(app, service)
    client = TestClient(app, raise_server_exceptions=False)
    response = client.post("/celebbasis/v1/tune", json={"images": [b64_image()], "name": "zed", "steps": 2})
    detail = assert_one_line_error(response, 500)
    assert "out of memory" in detail and "--medvram" in detail
    assert not (tmp_path / "out").exists()


def test_faces_names_presets_progress(api, astronaut_path):
    client, _, _ = api
    detail = assert_one_line_error(client.post("/celebbasis/v1/faces", json={"image": b64_image()}), 400)
    assert "face encoder 'none' finds no faces" in detail
    assert "image is not valid base64" in assert_one_line_error(client.post("/celebbasis/v1/faces",
                                                                            json={"image": "%%%"}), 400)
    assert "image: Field required" in assert_one_line_error(client.post("/celebbasis/v1/faces", json={}), 422)
    check = client.post("/celebbasis/v1/names/check", json={"name": "a/b"}).json()
    assert check["level"] == "error" and not check["ok"]
    assert client.post("/celebbasis/v1/names/check", json={"name": "zed_free"}).json()["ok"]
    presets = client.get("/celebbasis/v1/presets").json()
    assert presets["presets"]["Best"]["steps"] == 800 and presets["default"] == "Balanced"
    assert client.get("/celebbasis/v1/progress").json()["busy"] is False


@needs_dlib
def test_faces_with_dlib(api, astronaut_path):
    client, _, _ = api
    image = base64.b64encode(Path(astronaut_path).read_bytes()).decode()
    response = client.post("/celebbasis/v1/faces", json={"image": image, "face_encoder": "dlib", "thumbnails": True})
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert response.json()["count"] == 1 and faces[0]["index"] == 0 and len(faces[0]["box"]) == 4
    assert base64.b64decode(faces[0]["thumbnail"])[:4] == b"\x89PNG"
    response = client.post("/celebbasis/v1/faces", json={"image": b64_image(), "face_encoder": "dlib"})
    assert response.status_code == 200 and response.json()["count"] == 0


def test_auth_with_host_credentials(tmp_path):
    service = CelebBasisService(lambda: None, tmp_path / "out", ServiceSettings(face_encoder="none"))
    app = FastAPI()
    users = {"value": parse_credentials("alice:s3cret,bob:pw:with:colons")}
    mount(app, service, credentials=lambda: users["value"])
    client = TestClient(app)
    assert users["value"] == {"alice": "s3cret", "bob": "pw:with:colons"}
    refused = client.get("/celebbasis/v1/identities")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Basic"
    assert refused.json()["detail"] == "Incorrect username or password"
    assert client.get("/celebbasis/v1/identities", auth=("alice", "wrong")).status_code == 401
    assert client.get("/celebbasis/v1/identities", auth=("mallory", "s3cret")).status_code == 401
    assert client.post("/celebbasis/v1/tune", json={"images": [], "name": "x"}).status_code == 401
    assert client.delete("/celebbasis/v1/identities/x").status_code == 401
    assert client.get("/celebbasis/v1/identities", auth=("alice", "s3cret")).status_code == 200
    assert client.get("/celebbasis/v1/progress", auth=("bob", "pw:with:colons")).status_code == 200
    users["value"] = None  # --api-auth not set: open
    assert client.get("/celebbasis/v1/identities").status_code == 200
    # mounting again (a UI reload) replaces the routes instead of adding a second set
    mount(app, service)
    assert sum(1 for route in app.routes if getattr(route, "path", "") == "/celebbasis/v1/tune") == 1


def test_cli_ui_refuses_bad_options_with_exit_2(tmp_path, capsys):
    from celebbasis_ext.cli import main

    for argv, words in (
        (["--face-encoder", "bogus"], "error: unknown face encoder 'bogus': choose one of auto"),
        (["--port", "70000"], "error: --port must be from 1 to 65535, not 70000"),
    ):
        assert main(["ui", "--model", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
    assert main(["ui", "--model", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "error: model not found" in err and "missing.safetensors" in err and "Traceback" not in err, err
