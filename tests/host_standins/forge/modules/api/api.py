"""``modules/api/api.py`` of Forge main / Neo, reduced to what an extension meets.

``Api(app, queue_lock)`` (only with ``--api`` / ``--nowebui``): with ``--api-auth "u:p,..."`` its own routes
(``add_api_route``) depend on ``auth`` (HTTP Basic, ``compare_digest``; else ``HTTPException(401,
"Incorrect username or password", WWW-Authenticate: Basic)``). Unlike A1111 1.10.1, Forge does **not**
install ``api_middleware`` (commented out "FIXME"), so exceptions keep FastAPI's default handling. Routes
an extension adds to ``app`` itself get no auth. ``/sdapi/v1/txt2img`` runs ``process_images`` in the
request's thread under ``queue_lock`` with ``state.begin(job="scripts_txt2img")`` / ``end()`` (body
reduced to prompt, seed, steps, width, height). ``/sdapi/v1/embeddings`` lists the API's **own**
database (``modules.textual_inversion``), not the loaded model's; not modelled here.
"""

from secrets import compare_digest
from threading import Lock
from typing import Optional

from fastapi import Depends, FastAPI
from fastapi.exceptions import HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel

import modules.shared as shared
from modules import processing


class Txt2ImgRequest(BaseModel):
    prompt: str = ""
    seed: int = 0
    steps: int = 2
    width: int = 64
    height: int = 64


class Txt2ImgResponse(BaseModel):
    images: list
    info: str
    parameters: Optional[dict] = None


class Api:
    def __init__(self, app: FastAPI, queue_lock: Lock):
        if shared.cmd_opts.api_auth:
            self.credentials = {}
            for auth in shared.cmd_opts.api_auth.split(","):
                user, password = auth.split(":")
                self.credentials[user] = password
        self.app = app
        self.queue_lock = queue_lock
        self.add_api_route("/sdapi/v1/txt2img", self.text2imgapi, methods=["POST"], response_model=Txt2ImgResponse)

    def add_api_route(self, path: str, endpoint, **kwargs):
        if shared.cmd_opts.api_auth:
            return self.app.add_api_route(path, endpoint, dependencies=[Depends(self.auth)], **kwargs)
        return self.app.add_api_route(path, endpoint, **kwargs)

    def auth(self, credentials: HTTPBasicCredentials = Depends(HTTPBasic())):
        if credentials.username in self.credentials:
            if compare_digest(credentials.password, self.credentials[credentials.username]):
                return True
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    def text2imgapi(self, txt2imgreq: Txt2ImgRequest):
        with self.queue_lock:
            p = processing.StableDiffusionProcessingTxt2Img(sd_model=shared.sd_model, n_iter=1, batch_size=1,
                                                            **txt2imgreq.model_dump())
            try:
                shared.state.begin(job="scripts_txt2img")
                processed = processing.process_images(p)
            finally:
                shared.state.end()
                p.close()
        return Txt2ImgResponse(images=[], info=processed.infotexts[0], parameters=txt2imgreq.model_dump())
