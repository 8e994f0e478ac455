"""``modules/call_queue.py`` of Forge main / Neo.

As A1111 1.10.1 (``queue_lock`` a FIFO lock; a first argument ``"task(...)"`` is the progress id;
``state.begin(job=id)`` ... ``state.end()`` under the lock; afterwards ``skipped``, ``interrupted``,
``stopping_generation``, ``job_count`` and ``job`` are reset; the result is a tuple whose last item gets
the timing HTML; on an exception ``extra_outputs + [error html]``), with Forge's differences:
``func`` runs in the caller's thread (gradio's worker), **not** on ``modules_forge.main_thread``; the
error text is ``main_thread.last_exception`` when that is set (the last failed txt2img/img2img, even
a stale one), else the exception (Forge main prints the traceback; Neo formats ``"Type: message"``).
"""

import html
import os.path
import time
import traceback
from functools import wraps

from modules import devices, fifo_lock, profiling, progress, shared
from modules_forge import main_thread

FLAVOR = os.environ.get("FORGE_STANDIN_FLAVOR", "neo")

queue_lock = fifo_lock.FIFOLock()


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with queue_lock:
            res = func(*args, **kwargs)
        return res

    return f


def wrap_gradio_gpu_call(func, extra_outputs=None):
    @wraps(func)
    def f(*args, **kwargs):
        if args and type(args[0]) == str and args[0].startswith("task(") and args[0].endswith(")"):
            id_task = args[0]
            progress.add_task_to_queue(id_task)
        else:
            id_task = None

        with queue_lock:
            shared.state.begin(job=id_task)
            progress.start_task(id_task)
            try:
                res = func(*args, **kwargs)
                progress.record_results(id_task, res)
            finally:
                progress.finish_task(id_task)
            shared.state.end()
        return res

    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
    @wraps(func)
    def f(*args, **kwargs):
        try:
            res = func(*args, **kwargs)
        finally:
            shared.state.skipped = False
            shared.state.interrupted = False
            shared.state.stopping_generation = False
            shared.state.job_count = 0
            shared.state.job = ""
        return res

    return wrap_gradio_call_no_job(f, extra_outputs, add_stats)


def wrap_gradio_call_no_job(func, extra_outputs=None, add_stats=False):
    @wraps(func)
    def f(*args, extra_outputs_array=extra_outputs, **kwargs):
        t = time.perf_counter()
        try:
            res = list(func(*args, **kwargs))
        except Exception:
            if FLAVOR == "main":
                if main_thread.last_exception is not None:
                    e = main_thread.last_exception
                else:
                    traceback.print_exc()
                error_message = f"{type(e).__name__}: {e}"
            elif main_thread.last_exception is not None:
                error_message = main_thread.last_exception
            else:
                error_message = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            if extra_outputs_array is None:
                extra_outputs_array = [None, ""]
            res = extra_outputs_array + [f"<div class='error'>{html.escape(error_message)}</div>"]

        devices.torch_gc()

        if not add_stats:
            return tuple(res)

        elapsed = time.perf_counter() - t
        elapsed_m = int(elapsed // 60)
        elapsed_s = elapsed % 60
        elapsed_text = f"{elapsed_s:.1f} sec."
        if elapsed_m > 0:
            elapsed_text = f"{elapsed_m} min. " + elapsed_text
        profiling_html = ""
        if shared.opts.profiling_enable and os.path.exists(shared.opts.profiling_filename):
            profiling_html = f"<p class='profile'> [ <a href='{profiling.webpath()}' download>Profile</a> ] </p>"
        res[-1] += (f"<div class='performance'><p class='time'>Time taken: <wbr><span class='measurement'>"
                    f"{elapsed_text}</span></p>{profiling_html}</div>")
        return tuple(res)

    return f
