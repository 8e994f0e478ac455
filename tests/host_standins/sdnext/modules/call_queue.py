"""``modules/call_queue.py`` of SD.Next.

``queue_lock`` is a plain ``threading.Lock`` (not a FIFO). ``wrap_gradio_gpu_call(func, extra_outputs=None,
name=None)`` (no ``functools.wraps``): a first argument ``"task(...)"`` is queued with ``progress``; under the
lock ``func`` runs in the caller's thread; an exception becomes ``extra_outputs`` with an error div
**appended to that very list** (SD.Next reuses the caller's list). Around it ``wrap_gradio_call``:
``shared.state.begin(name, task_id=...)`` **before** taking the lock and ``shared.state.end(jobid)``
after (``interrupted`` is only reset by the next ``begin``); the timing is appended to the last item
when it is a string.
"""

import html
import threading
import time

from modules import errors, progress, shared

queue_lock = threading.Lock()


def get_lock():
    return queue_lock


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with get_lock():
            res = func(*args, **kwargs)
        return res
    return f


def wrap_gradio_gpu_call(func, extra_outputs=None, name=None):
    name = name or func.__name__

    def f(*args, **kwargs):
        if len(args) > 0 and type(args[0]) == str and args[0][0:5] == "task(" and args[0][-1] == ")":
            id_task = args[0]
            progress.add_task_to_queue(id_task)
        else:
            id_task = None
        with get_lock():
            progress.start_task(id_task)
            try:
                res = func(*args, **kwargs)
                progress.record_results(id_task, res)
            except Exception as e:
                errors.display(e, "gradio call")
                res = extra_outputs or []
                res.append(f"<div class='error'>{html.escape(str(e))}</div>")
            finally:
                progress.finish_task(id_task)
        return res
    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True, name=name)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False, name=None):
    job_name = name if name is not None else func.__name__

    def f(*args, extra_outputs_array=extra_outputs, **kwargs):
        t = time.perf_counter()
        if len(args) > 0 and type(args[0]) == str and args[0][0:5] == "task(" and args[0][-1] == ")":
            task_id = args[0]
        else:
            task_id = 0
        jobid = shared.state.begin(job_name, task_id=task_id)
        try:
            res = func(*args, **kwargs)
            if res is None:
                res = extra_outputs_array or []
                res.append("<div class='error'>No result returned from function</div>")
            else:
                res = list(res)
        except Exception as e:
            errors.display(e, "gradio call")
            res = extra_outputs_array or []
            res.append(f"<div class='error'>{html.escape(type(e).__name__ + ': ' + str(e))}</div>")
        shared.state.end(jobid)
        if not add_stats:
            return tuple(res)
        elapsed = time.perf_counter() - t
        elapsed_m, elapsed_s = int(elapsed // 60), elapsed % 60
        elapsed_text = f"{elapsed_m}m {elapsed_s:.2f}s" if elapsed_m > 0 else f"{elapsed_s:.2f}s"
        if isinstance(res, list) and isinstance(res[-1], str):
            res[-1] += f"<div class='performance'><p>Time: {elapsed_text}</p></div>"
        return tuple(res)
    return f
