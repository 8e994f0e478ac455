"""modules/api/api.py: the ``/sdapi/v1`` app pieces an extension's routes should match.

* ``Api(app, queue_lock)`` (created only with ``--api`` or ``--nowebui``, after
  ``setup_middleware``/progress routes and before ``app_started_callback``)
  installs ``api_middleware(app)``: every uncaught exception of *any* route of
  the app becomes a JSON 500 ``{"error", "detail", "body", "errors"}`` (traceback
  printed on the console, not sent), an ``HTTPException`` keeps its status.
* Auth: with ``--api-auth "u1:p1,u2:p2"`` each ``/sdapi`` route gets
  ``dependencies=[Depends(self.auth)]``; ``auth`` uses fastapi's ``HTTPBasic()``
  and ``secrets.compare_digest`` and raises 401 "Incorrect username or
  password" with ``WWW-Authenticate: Basic``. Routes added by extensions with
  ``app.add_api_route`` get none of this automatically.
* ``/sdapi/v1/embeddings`` and ``/sdapi/v1/refresh-embeddings`` (the latter
  under ``queue_lock`` with ``force_reload=True``), ``/sdapi/v1/interrupt``,
  ``/sdapi/v1/progress``.
"""

import datetime  # noqa: F401
import time
from secrets import compare_digest

from fastapi import Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

import modules.shared as shared
from modules import errors, sd_hijack


def api_middleware(app: FastAPI):
    @app.middleware("http")
    async def log_and_time(req: Request, call_next):
        ts = time.time()
        res: Response = await call_next(req)
        res.headers["X-Process-Time"] = str(round(time.time() - ts, 4))
        return res

    def handle_exception(request: Request, e: Exception):
        err = {
            "error": type(e).__name__,
            "detail": vars(e).get('detail', ''),
            "body": vars(e).get('body', ''),
            "errors": str(e),
        }
        if not isinstance(e, HTTPException):
            errors.report(f"API error: {request.method}: {request.url} {err}", exc_info=True)
        return JSONResponse(status_code=vars(e).get('status_code', 500), content=jsonable_encoder(err))

    @app.middleware("http")
    async def exception_handling(request: Request, call_next):
        try:
            return await call_next(request)
        except Exception as e:
            return handle_exception(request, e)

    @app.exception_handler(Exception)
    async def fastapi_exception_handler(request: Request, e: Exception):
        return handle_exception(request, e)

    @app.exception_handler(HTTPException)
    async def http_exception_handler(request: Request, e: HTTPException):
        return handle_exception(request, e)


class Api:
    def __init__(self, app: FastAPI, queue_lock):
        if shared.cmd_opts.api_auth:
            self.credentials = {}
            for auth in shared.cmd_opts.api_auth.split(","):
                user, password = auth.split(":")
                self.credentials[user] = password

        self.app = app
        self.queue_lock = queue_lock
        api_middleware(self.app)
        self.add_api_route("/sdapi/v1/progress", self.progressapi, methods=["GET"])
        self.add_api_route("/sdapi/v1/interrupt", self.interruptapi, methods=["POST"])
        self.add_api_route("/sdapi/v1/embeddings", self.get_embeddings, methods=["GET"])
        self.add_api_route("/sdapi/v1/refresh-embeddings", self.refresh_embeddings, methods=["POST"])

    def add_api_route(self, path: str, endpoint, **kwargs):
        if shared.cmd_opts.api_auth:
            return self.app.add_api_route(path, endpoint, dependencies=[Depends(self.auth)], **kwargs)
        return self.app.add_api_route(path, endpoint, **kwargs)

    def auth(self, credentials: HTTPBasicCredentials = Depends(HTTPBasic())):
        if credentials.username in self.credentials:
            if compare_digest(credentials.password, self.credentials[credentials.username]):
                return True

        raise HTTPException(status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    def progressapi(self):
        state = shared.state
        progress = 0.01
        if state.job_count > 0:
            progress += state.job_no / state.job_count
        if state.sampling_steps > 0:
            progress += 1 / max(state.job_count, 1) * state.sampling_step / state.sampling_steps
        return {"progress": min(progress, 1), "eta_relative": 0.0, "state": state.dict(), "current_image": None, "textinfo": state.textinfo}

    def interruptapi(self):
        shared.state.interrupt()
        return {}

    def get_embeddings(self):
        db = sd_hijack.model_hijack.embedding_db

        def convert_embedding(embedding):
            return {
                "step": embedding.step,
                "sd_checkpoint": embedding.sd_checkpoint,
                "sd_checkpoint_name": embedding.sd_checkpoint_name,
                "shape": embedding.shape,
                "vectors": embedding.vectors,
            }

        def convert_embeddings(embeddings):
            return {embedding.name: convert_embedding(embedding) for embedding in embeddings.values()}

        return {
            "loaded": convert_embeddings(db.word_embeddings),
            "skipped": convert_embeddings(db.skipped_embeddings),
        }

    def refresh_embeddings(self):
        with self.queue_lock:
            sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)
