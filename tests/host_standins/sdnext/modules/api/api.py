"""``modules/api/api.py`` of SD.Next, reduced.

``Api(app, queue_lock)`` always exists (no ``--api`` needed). Users come from ``--auth "u:p,..."`` and
``--auth-file`` (one ``u:p`` per line; quotes stripped; split at the first colon), **not** from
``--api-auth``. ``add_api_route(path, fn, auth=True, **kwargs)`` adds ``Depends(self.auth)`` when there are
users; ``auth`` raises ``HTTPException(401, "Unauthorized", WWW-Authenticate: Basic)``. Routes an
extension adds to ``app`` itself get no auth.
"""

from secrets import compare_digest
from threading import Lock

from fastapi import Depends, FastAPI
from fastapi.exceptions import HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from modules import shared


class Api:
    def __init__(self, app: FastAPI, queue_lock: Lock):
        self.credentials = {}
        if shared.cmd_opts.auth:
            for auth in shared.cmd_opts.auth.split(","):
                user, password = auth.split(":", 1)
                self.credentials[user.replace('"', "").strip()] = password.replace('"', "").strip()
        if shared.cmd_opts.auth_file:
            with open(shared.cmd_opts.auth_file, encoding="utf8") as file:
                for line in file.readlines():
                    user, password = line.split(":", 1)
                    self.credentials[user.replace('"', "").strip()] = password.replace('"', "").strip()
        self.app = app
        self.queue_lock = queue_lock

    def register(self):
        pass

    def add_api_route(self, path: str, fn, auth: bool = True, **kwargs):
        if auth and self.credentials:
            deps = list(kwargs.get("dependencies", []))
            deps.append(Depends(self.auth))
            kwargs["dependencies"] = deps
        self.app.add_api_route(path, endpoint=fn, **kwargs)

    def auth(self, credentials: HTTPBasicCredentials = Depends(HTTPBasic())):
        if not self.credentials:
            return True
        if credentials.username in self.credentials:
            if compare_digest(credentials.password, self.credentials[credentials.username]):
                return True
        raise HTTPException(status_code=401, detail="Unauthorized", headers={"WWW-Authenticate": "Basic"})
