"""``modules/progress.py`` of SD.Next, reduced: task bookkeeping and ``POST /internal/progress`` (added
through ``shared.api.add_api_route``, so it is behind ``--auth``): ``progress = sampling_step /
sampling_steps`` (times the batch fraction), ``textinfo = state.textinfo`` while active."""

import time
from collections import OrderedDict

from pydantic import BaseModel

from modules import shared

current_task = None
pending_tasks = OrderedDict()
finished_tasks = []
recorded_results = []


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


def record_results(id_task, res):
    recorded_results.append((id_task, res))
    if len(recorded_results) > 2:
        recorded_results.pop(0)


def add_task_to_queue(id_job):
    pending_tasks[id_job] = time.time()


class ProgressRequest(BaseModel):
    id_task: str = None
    id_live_preview: int = -1


def api_progress(req: ProgressRequest):
    state = shared.state
    active = req.id_task == current_task
    step, steps = max(state.sampling_step, 0), max(state.sampling_steps, 1)
    progress = round(min(1, step / steps if step > 0 else 0), 2)
    textinfo = state.textinfo if active else ("Queued..." if req.id_task in pending_tasks else "Waiting...")
    return {"job": state.job, "textinfo": textinfo, "active": active, "queued": req.id_task in pending_tasks,
            "completed": req.id_task in finished_tasks, "progress": progress, "step": step, "steps": steps}


def setup_progress_api():
    shared.api.add_api_route("/internal/progress", api_progress, methods=["POST"])
