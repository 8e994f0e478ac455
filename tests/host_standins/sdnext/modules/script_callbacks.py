"""``modules/script_callbacks.py`` of SD.Next, reduced to the events an extension registers here.

Unlike A1111 1.10.1: ``on_<event>(callback)`` takes **no** ``name=`` keyword; each entry is
``ScriptCallback(script, callback)`` (no name), the script being the file of the registering call's
caller (``sys._getframe().f_back.f_back``). Invocation reports each callback's exception
(``errors.display``) and goes on; ``ui_tabs_callback()`` concatenates ``cb() or []`` (3-tuples
``(component, title, elem_id)``); ``script_unloaded_callback`` / ``before_ui_callback`` run in reverse.
"""

import sys
from collections import namedtuple

from modules import errors

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback"])
callback_map = dict(
    callbacks_app_started=[],
    callbacks_model_loaded=[],
    callbacks_ui_settings=[],
    callbacks_ui_tabs=[],
    callbacks_script_unloaded=[],
    callbacks_before_ui=[],
    callbacks_after_ui=[],
    callbacks_on_reload=[],
)


def report_exception(e, c, job):
    errors.display(e, f"executing callback: {c.script} {job}")


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def _run(category, *args, reverse=False):
    callbacks = callback_map[f"callbacks_{category}"]
    for c in (reversed(callbacks) if reverse else list(callbacks)):
        try:
            c.callback(*args)
        except Exception as e:
            report_exception(e, c, category)


def app_started_callback(demo, app):
    _run("app_started", demo, app)


def model_loaded_callback(sd_model):
    _run("model_loaded", sd_model)


def ui_settings_callback():
    _run("ui_settings")


def ui_tabs_callback():
    res = []
    for c in callback_map["callbacks_ui_tabs"]:
        try:
            res += c.callback() or []
        except Exception as e:
            report_exception(e, c, "ui_tabs_callback")
    return res


def script_unloaded_callback():
    _run("script_unloaded", reverse=True)


def before_ui_callback():
    _run("before_ui", reverse=True)


def add_callback(callbacks, fun):
    filename = sys._getframe().f_back.f_back.f_code.co_filename  # noqa: SLF001 - as SD.Next
    callbacks.append(ScriptCallback(filename, fun))


def on_app_started(callback):
    add_callback(callback_map["callbacks_app_started"], callback)


def on_model_loaded(callback):
    add_callback(callback_map["callbacks_model_loaded"], callback)


def on_ui_settings(callback):
    add_callback(callback_map["callbacks_ui_settings"], callback)


def on_ui_tabs(callback):
    add_callback(callback_map["callbacks_ui_tabs"], callback)


def on_script_unloaded(callback):
    add_callback(callback_map["callbacks_script_unloaded"], callback)


def on_before_ui(callback):
    add_callback(callback_map["callbacks_before_ui"], callback)


def on_after_ui(callback):
    add_callback(callback_map["callbacks_after_ui"], callback)


def on_before_reload(callback):
    add_callback(callback_map["callbacks_on_reload"], callback)
