"""HTTP API under ``/celebbasis/v1/`` on the host's FastAPI app (or the standalone UI's).

Routes (JSON):

* ``POST /celebbasis/v1/tune``: ``{"images": [base64, ...], "name": ..., "preset": ..., "steps": ...,
  "learning_rate": ..., "seed": ..., "mode": ..., "resolution": ..., "views": ..., "loss_mask": ..., "face_encoder": ..., "face_index": ..., "overwrite": ...,
  "likeness": false}`` -> name, token, file, family, base_model, metadata, warnings, seconds, likeness, scores.
* ``GET /celebbasis/v1/identities`` -> ``{"identities": [{name, date, base_model, family, likeness, file, ...}]}``.
* ``DELETE /celebbasis/v1/identities/{name}`` -> ``{"deleted": name, "file": ...}`` (404 if there is none).
* ``POST /celebbasis/v1/faces``: ``{"image": base64, "face_encoder": ..., "thumbnails": false}`` ->
  ``{"faces": [{index, box, score}], "count": n}``.
* ``POST /celebbasis/v1/names/check``: ``{"name": ..., "overwrite": false}`` -> ``{"level", "message", "ok"}``.
* ``GET /celebbasis/v1/presets``, ``GET /celebbasis/v1/progress``, ``POST /celebbasis/v1/cancel``.

Bad input answers 400 (404 for an unknown identity, 422 for a malformed
body, 409 when cancelled) with ``{"detail": "one line"}``; a runtime failure
answers 500 with one line too, never a traceback. With ``credentials`` (the
host's --api-auth users) every route needs HTTP Basic auth. Work that uses
the model (tune, delete's reload) runs under ``lock`` (the host's queue lock).
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import secrets
from typing import Any, Callable, Dict, List, Optional

from fastapi import APIRouter, Depends, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel

from ..errors import BadInput, Cancelled
from ..service import PRESETS, CelebBasisService, IdentityNotFound, one_line

log = logging.getLogger(__name__)

PREFIX = "/celebbasis/v1"
MAX_IMAGE_BYTES = 32 * 1024 * 1024
MAX_IMAGES = 16

import pydantic

if int(pydantic.VERSION.split(".")[0]) >= 2:
    from pydantic import ConfigDict

    class _Model(BaseModel):
        model_config = ConfigDict(extra="forbid")
else:  # pydantic 1 (A1111 1.10 pins 1.10): ConfigDict imports there too, but is ignored
    class _Model(BaseModel):  # type: ignore[no-redef]
        class Config:
            extra = "forbid"


class TuneBody(_Model):
    images: List[str]
    name: str
    preset: Optional[str] = None
    steps: Optional[int] = None
    learning_rate: Optional[float] = None
    seed: Optional[int] = None
    mode: Optional[str] = None
    resolution: Optional[int] = None  # training canvas in pixels (default: the model's own); lower on small GPUs
    views: Optional[str] = None  # training views: paper, photo or mixed
    loss_mask: Optional[str] = None  # face or none; auto (the default): face where a face encoder finds it
    face_encoder: Optional[str] = None
    face_index: Optional[int] = None
    overwrite: bool = False
    likeness: bool = False


class TuneResponse(BaseModel):
    name: str
    token: str
    file: str
    family: str
    base_model: Optional[str] = None
    metadata: Dict[str, str]
    warnings: List[str]
    seconds: float
    final_loss: Optional[float] = None
    face_encoder: str
    likeness: Optional[float] = None
    scores: Optional[List[Optional[float]]] = None


class FacesBody(_Model):
    image: str
    face_encoder: Optional[str] = None
    thumbnails: bool = False


class NameBody(_Model):
    name: str
    overwrite: bool = False


def decode_image(data: Any, label: str) -> bytes:
    """Bytes of a base64 image (a ``data:image/...;base64,`` prefix is accepted)."""
    if not isinstance(data, str) or not data.strip():
        raise BadInput(f"{label} is empty: send the image as base64 text")
    text = data.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise BadInput(f"{label} is larger than {MAX_IMAGE_BYTES >> 20} MB")
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{label} is not valid base64") from None
    if not raw:
        raise BadInput(f"{label} is empty")
    return raw


def _errors_line(errors) -> str:
    parts = []
    for error in errors[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{location}: {error.get('msg', 'invalid')}" if location else str(error.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts)


class _OneLineErrors(APIRoute):
    """This router's validation errors as one line (the host's other routes are untouched)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request):
            try:
                return await handler(request)
            except RequestValidationError as error:
                return JSONResponse({"detail": _errors_line(error.errors())}, status_code=422)

        return route


def _http_error(error: BaseException) -> HTTPException:
    if isinstance(error, IdentityNotFound):
        return HTTPException(404, detail=str(error))
    if isinstance(error, BadInput):
        return HTTPException(400, detail=str(error))
    if isinstance(error, Cancelled):
        return HTTPException(409, detail=str(error) or "cancelled; nothing was written")
    log.error("celebbasis API request failed", exc_info=error)
    return HTTPException(500, detail=one_line(error))


def _locked(lock):
    """``lock`` may be a lock object (``with lock``) or a factory of context managers."""
    if lock is None:
        import contextlib

        return contextlib.nullcontext()
    if hasattr(lock, "__enter__"):
        return lock
    return lock()


def _auth_dependency(credentials: Optional[Callable[[], Optional[Dict[str, str]]]]):
    basic = HTTPBasic(auto_error=False)

    def check(given: Optional[HTTPBasicCredentials] = Depends(basic)) -> None:
        users = credentials() if credentials is not None else None
        if not users:
            return
        if given is not None and given.username in users and \
                secrets.compare_digest(given.password.encode(), str(users[given.username]).encode()):
            return
        raise HTTPException(401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    return check


def parse_credentials(value: Optional[str]) -> Optional[Dict[str, str]]:
    """A1111's --api-auth format: ``user:password,user2:password2``."""
    if not value:
        return None
    users = {}
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if sep and user:
            users[user] = password
    return users or None


def build_router(service: CelebBasisService, lock=None,
                 credentials: Optional[Callable[[], Optional[Dict[str, str]]]] = None) -> APIRouter:
    """The routes, bound to ``service``; ``lock`` serialises model work with the host."""
    router = APIRouter(prefix=PREFIX, route_class=_OneLineErrors, tags=["celebbasis"],
                       dependencies=[Depends(_auth_dependency(credentials))])

    @router.post("/tune", response_model=TuneResponse)
    def tune(body: TuneBody):
        try:
            if not body.images:
                raise BadInput("images is empty: send at least one photo as base64")
            if len(body.images) > MAX_IMAGES:
                raise BadInput(f"{len(body.images)} images sent; at most {MAX_IMAGES}")
            photos = [decode_image(image, f"images[{index}]") for index, image in enumerate(body.images)]
            options = {key: getattr(body, key) for key in ("steps", "learning_rate", "seed", "mode", "resolution",
                                                          "views", "loss_mask")
                       if getattr(body, key) is not None}
            service.build_options(body.preset, options, body.face_encoder)  # fail fast, before the queue
            with _locked(lock):
                return service.tune(photos, body.name, preset=body.preset, options=options,
                                    face_index=body.face_index, overwrite=body.overwrite,
                                    face_encoder=body.face_encoder, likeness=body.likeness)
        except HTTPException:
            raise
        except Exception as error:  # noqa: BLE001 - every failure becomes one line
            raise _http_error(error) from None

    @router.get("/identities")
    def identities():
        try:
            return {"identities": service.identities(), "folder": str(service.out_dir)}
        except Exception as error:  # noqa: BLE001
            raise _http_error(error) from None

    @router.delete("/identities/{name}")
    def delete(name: str):
        try:
            with _locked(lock):
                path = service.delete(name)
            return {"deleted": name, "file": str(path)}
        except Exception as error:  # noqa: BLE001
            raise _http_error(error) from None

    @router.post("/faces")
    def faces(body: FacesBody):
        try:
            found = service.detect(decode_image(body.image, "image"), body.face_encoder)
            items = []
            for face in found:
                item = face.as_dict()
                if body.thumbnails and face.thumbnail is not None:
                    buffer = io.BytesIO()
                    face.thumbnail.save(buffer, format="PNG")
                    item["thumbnail"] = base64.b64encode(buffer.getvalue()).decode("ascii")
                items.append(item)
            return {"faces": items, "count": len(items)}
        except Exception as error:  # noqa: BLE001
            raise _http_error(error) from None

    @router.post("/names/check")
    def check_name(body: NameBody):
        check = service.check_name(body.name, body.overwrite)
        return {"level": check.level, "message": check.message, "ok": check.ok}

    @router.get("/presets")
    def presets():
        return {"presets": {name: dict(values) for name, values in PRESETS.items()},
                "default": service.default_preset()}

    @router.get("/progress")
    def progress():
        return service.progress()

    @router.post("/cancel")
    def cancel():
        service.cancel()
        return {"cancelled": service.busy}

    return router


def mount(app, service: CelebBasisService, lock=None,
          credentials: Optional[Callable[[], Optional[Dict[str, str]]]] = None) -> APIRouter:
    """Add the routes to ``app``, replacing ours from an earlier mount (UI reloads)."""
    app.router.routes[:] = [route for route in app.router.routes
                            if not str(getattr(route, "path", "")).startswith(PREFIX + "/")]
    router = build_router(service, lock=lock, credentials=credentials)
    app.include_router(router)
    return router
