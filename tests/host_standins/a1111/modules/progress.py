"""modules/progress.py: task bookkeeping and ``POST /internal/progress``, faithful to 1.10.1.

``add_task_to_queue(id)`` -> pending; ``start_task(id)`` -> current;
``finish_task(id)`` -> finished (last 16). ``progressapi`` answers
``active/queued/completed``, ``progress`` from ``shared.state``
(``job_no/job_count`` plus ``sampling_step/sampling_steps``), ``eta`` and
``textinfo``.
"""

import base64
import io
import random
import string
import time
from collections import OrderedDict
from typing import List, Optional

try:
    from pydantic import BaseModel, Field
except ImportError:  # the stand-in works without pydantic; only the HTTP routes need it
    class BaseModel:
        def __init__(self, **kwargs):
            for key, value in kwargs.items():
                setattr(self, key, value)

    def Field(default=None, **kwargs):  # noqa: N802
        return default

import modules.shared as shared
from modules.shared import opts  # noqa: F401  (the real module binds opts at import)

current_task = None
pending_tasks = OrderedDict()
finished_tasks = []
recorded_results = []
recorded_results_limit = 2


def start_task(id_task):
    global current_task

    current_task = id_task
    pending_tasks.pop(id_task, None)


def finish_task(id_task):
    global current_task

    if current_task == id_task:
        current_task = None

    finished_tasks.append(id_task)
    if len(finished_tasks) > 16:
        finished_tasks.pop(0)


def create_task_id(task_type):
    N = 7
    res = ''.join(random.choices(string.ascii_uppercase + string.digits, k=N))
    return f"task({task_type}-{res})"


def record_results(id_task, res):
    recorded_results.append((id_task, res))
    if len(recorded_results) > recorded_results_limit:
        recorded_results.pop(0)


def add_task_to_queue(id_job):
    pending_tasks[id_job] = time.time()


class PendingTasksResponse(BaseModel):
    size: int = Field(title="Pending task size")
    tasks: List[str] = Field(title="Pending task ids")


# A1111 1.10 runs pydantic 1, where ``x: str = Field(default=None)`` accepts None; Optional says so for pydantic 2.
class ProgressRequest(BaseModel):
    id_task: Optional[str] = Field(default=None, title="Task ID", description="id of the task to get progress for")
    id_live_preview: int = Field(default=-1, title="Live preview image ID")
    live_preview: bool = Field(default=True, title="Include live preview")


class ProgressResponse(BaseModel):
    active: bool = Field(title="Whether the task is being worked on right now")
    queued: bool = Field(title="Whether the task is in queue")
    completed: bool = Field(title="Whether the task has already finished")
    progress: Optional[float] = Field(default=None, title="Progress", description="The progress with a range of 0 to 1")
    eta: Optional[float] = Field(default=None, title="ETA in secs")
    live_preview: Optional[str] = Field(default=None, title="Live preview image", description="Current live preview; a data: uri")
    id_live_preview: Optional[int] = Field(default=None, title="Live preview image ID")
    textinfo: Optional[str] = Field(default=None, title="Info text", description="Info text used by WebUI.")


def setup_progress_api(app):
    app.add_api_route("/internal/pending-tasks", get_pending_tasks, methods=["GET"])
    return app.add_api_route("/internal/progress", progressapi, methods=["POST"], response_model=ProgressResponse)


def get_pending_tasks():
    pending_tasks_ids = list(pending_tasks)
    return PendingTasksResponse(size=len(pending_tasks_ids), tasks=pending_tasks_ids)


def progressapi(req: ProgressRequest):
    active = req.id_task == current_task
    queued = req.id_task in pending_tasks
    completed = req.id_task in finished_tasks

    if not active:
        textinfo = "Waiting..."
        if queued:
            sorted_queued = sorted(pending_tasks.keys(), key=lambda x: pending_tasks[x])
            queue_index = sorted_queued.index(req.id_task)
            textinfo = "In queue: {}/{}".format(queue_index + 1, len(sorted_queued))
        return ProgressResponse(active=active, queued=queued, completed=completed, id_live_preview=-1, textinfo=textinfo)

    progress = 0

    job_count, job_no = shared.state.job_count, shared.state.job_no
    sampling_steps, sampling_step = shared.state.sampling_steps, shared.state.sampling_step

    if job_count > 0:
        progress += job_no / job_count
    if sampling_steps > 0 and job_count > 0:
        progress += 1 / job_count * sampling_step / sampling_steps

    progress = min(progress, 1)

    elapsed_since_start = time.time() - shared.state.time_start
    predicted_duration = elapsed_since_start / progress if progress > 0 else None
    eta = predicted_duration - elapsed_since_start if predicted_duration is not None else None

    live_preview = None
    id_live_preview = req.id_live_preview

    if shared.opts.live_previews_enable and req.live_preview:
        shared.state.set_current_image()
        if shared.state.id_live_preview != req.id_live_preview:
            image = shared.state.current_image
            if image is not None:
                buffered = io.BytesIO()
                image.save(buffered, format=shared.opts.live_previews_image_format)
                base64_image = base64.b64encode(buffered.getvalue()).decode('ascii')
                live_preview = f"data:image/{shared.opts.live_previews_image_format};base64,{base64_image}"
                id_live_preview = shared.state.id_live_preview

    return ProgressResponse(active=active, queued=queued, completed=completed, progress=progress, eta=eta, live_preview=live_preview, id_live_preview=id_live_preview, textinfo=shared.state.textinfo)


def restore_progress(id_task):
    while id_task == current_task or id_task in pending_tasks:
        time.sleep(0.1)

    res = next(iter([x[1] for x in recorded_results if id_task == x[0]]), None)
    if res is not None:
        return res

    import gradio as gr
    return gr.update(), gr.update(), gr.update(), f"Couldn't restore progress for {id_task}: results either have been discarded or never were obtained"
