"""``modules_forge/main_thread.py`` of Forge main / Neo: one thread runs the queued "major" calls.

In the real host ``loop()`` runs on the process's main thread (``webui.py`` starts the web server in
another thread, then calls it); the txt2img/img2img buttons hand their work over with
``run_and_wait_result(func, *args)`` and wait. Extension callbacks (``wrap_gradio_gpu_call``) are not
handed over: they run in gradio's worker thread. ``last_exception`` keeps the last failure of a task
(an exception object in Forge main, ``"Type: message"`` in Neo) and is reset by the next success.

Stand-in only: ``stop()`` ends ``loop()`` (the real one never returns).
"""

import os
import threading
import time
import traceback

FLAVOR = os.environ.get("FORGE_STANDIN_FLAVOR", "neo")

lock = threading.Lock()
last_id = 0
waiting_list = []
finished_list = []
last_exception = None
loop_thread = None  # stand-in: the thread running loop()
_stopped = threading.Event()


class Task:
    def __init__(self, task_id, func, args, kwargs):
        self.task_id = task_id
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.result = None
        self.exception = None

    def work(self):
        global last_exception
        try:
            self.result = self.func(*self.args, **self.kwargs)
            self.exception = None
            last_exception = None
        except Exception as e:
            traceback.print_exc()
            self.exception = e
            last_exception = e if FLAVOR == "main" else f"{type(e).__name__}: {e}"


def loop():
    global loop_thread
    loop_thread = threading.current_thread()
    while not _stopped.is_set():
        time.sleep(0.01)
        if waiting_list:
            with lock:
                task = waiting_list.pop(0)
            task.work()
            with lock:
                finished_list.append(task)


def stop():
    _stopped.set()


def async_run(func, *args, **kwargs):
    global last_id
    with lock:
        last_id += 1
        task = Task(task_id=last_id, func=func, args=args, kwargs=kwargs)
        waiting_list.append(task)
    return task.task_id


def run_and_wait_result(func, *args, **kwargs):
    current_id = async_run(func, *args, **kwargs)
    while True:
        time.sleep(0.01)
        for task in finished_list.copy():
            if task.task_id == current_id:
                with lock:
                    finished_list.remove(task)
                return task.result
