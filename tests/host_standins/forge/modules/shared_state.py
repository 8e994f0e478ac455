"""``modules/shared_state.py`` of Forge main / Neo: A1111 1.10.1's ``State`` (same fields, ``begin(job=...)``,
``end()``, ``interrupt()``, ``stopping_generation``); the live-preview methods are decorated with
``torch.inference_mode`` in Forge (not modelled: no previews here). Neo adds ``preview_step``, reset by
``begin`` and ``nextjob``."""

import os

from modules._a1111 import include

include(__name__)

if os.environ.get("FORGE_STANDIN_FLAVOR", "neo") == "neo":
    _A1111State = State  # noqa: F821 - defined by the included text

    class State(_A1111State):  # noqa: F811
        preview_step: int = 0

        def begin(self, job: str = "(unknown)"):
            self.preview_step = 0
            super().begin(job)

        def nextjob(self):
            super().nextjob()
            self.preview_step = 0
