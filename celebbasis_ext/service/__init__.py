"""What every front end does, in one place: the tab, the HTTP API and the standalone UI call this.

``CelebBasisService`` holds a way to get the host's current model (a callable
returning a ``ModelAdapter``), the output folder, and the settings, and
offers the verbs the front ends need: ``detect`` (faces in a photo),
``tune`` (photo -> embedding file), ``preview`` (render the new token and
score each render's likeness), ``identities``, ``delete`` and
``check_name``. It imports neither gradio nor any host module, so it is
tested on diffusers alone.

The host plugs itself in with a few callables: ``get_adapter`` (the loaded
model), ``after_save`` (reload embeddings after a file was written or
deleted), ``host_progress`` / ``host_should_cancel`` (the host's progress bar
and Interrupt button), ``render`` (preview images, one call per image),
``host_render_progress`` (the host's bar while previews render),
``host_interrupt`` (stops the host's sampler when the tab's Interrupt is
pressed during a preview), ``device`` (where tuning runs, without loading a
model) and ``known_embeddings`` (names the host has loaded from elsewhere).
Two jobs never interleave (``lock``); every path written or deleted stays
inside the output folder.

The parts, one concern each:

- ``front``: ``CelebBasisService``, the thin front keeping the hooks;
- ``settings``: ``ServiceSettings``, the presets, the options a run may take;
- ``jobs``: one job at a time, cancel and the host's Interrupt, the progress
  snapshot, how long runs take here;
- ``identities``: the files in the output folder, name checks, the likeness record;
- ``previews``: preview renders and their likeness to the training photos;
- ``faces``: photos as handed over, the face encoder, faces in a photo;
- ``records``: the small JSON records kept beside the embeddings.
"""

from ..errors import one_line
from .faces import FaceInfo, normalize_photo
from .front import MAX_PHOTOS, CelebBasisService
from .identities import LIKENESS_FILE, IdentityNotFound, NameCheck
from .jobs import TIMING_FILE
from .previews import PREVIEW_TEMPLATES
from .settings import DEFAULT_PRESET, PRESETS, TUNABLE_OPTIONS, ServiceSettings

__all__ = ["CelebBasisService", "ServiceSettings", "NameCheck", "FaceInfo", "IdentityNotFound", "PRESETS",
           "DEFAULT_PRESET", "TUNABLE_OPTIONS", "PREVIEW_TEMPLATES", "LIKENESS_FILE", "TIMING_FILE", "MAX_PHOTOS",
           "normalize_photo", "one_line"]
