"""``modules/shared_state.py`` of SD.Next, reduced: ``State`` with ``begin(title="", task_id=0, api=None)``
(no ``job=`` keyword; resets ``interrupted`` unless the title starts with "Save", sets ``job_count = 1``,
``sampling_step(s) = 0``, ``textinfo = None``, ``time_start``; returns the job id) and ``end(task_id=None,
api=None)``; ``interrupt()``, ``skip()``, ``pause()`` (a toggle); there is no ``stopping_generation``."""

import re
import time
import uuid


class State:
    id = 0
    skipped = False
    interrupted = False
    paused = False
    job = ""
    job_no = 0
    job_count = 0
    batch_no = 0
    batch_count = 0
    sampling_step = 0
    sampling_steps = 0
    current_image = None
    id_live_preview = 0
    textinfo = None
    time_start = None
    api = False
    total_jobs = 0
    state_history = []

    def skip(self):
        self.skipped = True

    def interrupt(self):
        self.interrupted = True

    def pause(self):
        self.paused = not self.paused

    def get_id(self, task_id=None):
        if task_id is None or task_id == 0:
            task_id = uuid.uuid4().hex[:15]
        match = re.search(r"\((.*?)\)", str(task_id))
        return match.group(1) if match else str(task_id)

    def clear(self):
        self.id = ""
        self.job = ""
        self.job_count = 0
        self.job_no = 0
        self.paused = False

    def begin(self, title="", task_id=0, api=None):
        self.clear()
        self.interrupted = self.interrupted if title.startswith("Save") else False
        self.skipped = False
        self.total_jobs += 1
        self.current_image = None
        self.id_live_preview = 0
        self.id = self.get_id(task_id)
        self.job = title
        self.job_count = 1
        self.batch_no = 0
        self.batch_count = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.textinfo = None
        self.api = api if api is not None else False
        self.time_start = time.time()
        self.state_history.append(("begin", self.id, title))
        return self.id

    def end(self, task_id=None, api=None):
        self.time_start = time.time()
        if api is not None:
            self.api = api
        self.state_history.append(("end", task_id or self.id, self.job))
        self.clear()
