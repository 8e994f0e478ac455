"""modules/scripts.py: ``basedir()``, ``Script``, ``load_scripts()``.

``load_scripts()`` as in 1.10.1: clear all callbacks, then import each
``scripts/*.py`` of every extension with the extension folder first on
``sys.path`` and ``current_basedir`` set to it (``basedir()`` is valid only
during that import), restoring both afterwards; an import error is reported
and loading goes on. The stand-in's extensions are the folders in
``<data>/extensions`` (the real one also reads builtin extensions and the
enabled/disabled list).
"""

import inspect
import os
import sys
from collections import namedtuple

from modules import errors, paths, script_callbacks, script_loading, extensions, timer

AlwaysVisible = object()


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    controls = None
    on_before_component_elem_id = None
    on_after_component_elem_id = None
    setup_for_ui_only = False

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def process(self, p, *args):
        pass


current_basedir = paths.script_path


def basedir():
    """returns the base directory for the current script (the extension's folder while its scripts import)"""
    return current_basedir


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])

scripts_data = []
postprocessing_scripts_data = []
loaded_modules = {}


def list_scripts(scriptdirname, extension, *, include_extensions=True):
    scripts_list = []
    if include_extensions and os.path.isdir(paths.extensions_dir):
        for dirname in sorted(os.listdir(paths.extensions_dir)):
            ext_dir = os.path.join(paths.extensions_dir, dirname)
            if not os.path.isdir(ext_dir):
                continue
            if extensions.find_extension(os.path.join(ext_dir, "x")) is None:
                extensions.extensions.append(extensions.Extension(dirname, ext_dir))
            script_dir = os.path.join(ext_dir, scriptdirname)
            if not os.path.isdir(script_dir):
                continue
            for filename in sorted(os.listdir(script_dir)):
                path = os.path.join(script_dir, filename)
                if os.path.splitext(path)[1].lower() == extension and os.path.isfile(path):
                    scripts_list.append(ScriptFile(ext_dir, filename, path))
    return scripts_list


def load_scripts():
    global current_basedir
    scripts_data.clear()
    postprocessing_scripts_data.clear()
    script_callbacks.clear_callbacks()

    scripts_list = list_scripts("scripts", ".py")

    syspath = sys.path

    def register_scripts_from_module(module):
        for script_class in module.__dict__.values():
            if inspect.isclass(script_class) and issubclass(script_class, Script) and script_class is not Script:
                scripts_data.append(ScriptClassData(script_class, scriptfile.path, scriptfile.basedir, module))

    for scriptfile in scripts_list:
        try:
            if scriptfile.basedir != paths.script_path:
                sys.path = [scriptfile.basedir] + sys.path
            current_basedir = scriptfile.basedir

            script_module = script_loading.load_module(scriptfile.path)
            loaded_modules[scriptfile.path] = script_module
            register_scripts_from_module(script_module)

        except Exception:
            errors.report(f"Error loading script: {scriptfile.filename}", exc_info=True)

        finally:
            sys.path = syspath
            current_basedir = paths.script_path
            timer.startup_timer.record(scriptfile.filename)
