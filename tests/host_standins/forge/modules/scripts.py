"""``modules/scripts.py`` of Forge main / Neo: A1111 1.10.1's ``basedir()``, ``Script``, ``list_scripts``, with
Forge's ``load_scripts()``: before importing anything it puts **every** script folder's base directory
(each extension's folder) first on ``sys.path`` and leaves them there; during each import the
extension's own folder is (again) first and ``current_basedir`` is set to it."""

import sys

from modules._a1111 import include

include(__name__)


def load_scripts():
    global current_basedir
    scripts_data.clear()  # noqa: F821 - defined by the included text
    postprocessing_scripts_data.clear()  # noqa: F821
    script_callbacks.clear_callbacks()  # noqa: F821

    scripts_list = list_scripts("scripts", ".py")  # noqa: F821

    for s in scripts_list:
        if s.basedir not in sys.path:
            sys.path = [s.basedir] + sys.path

    syspath = sys.path

    def register_scripts_from_module(module):
        for script_class in module.__dict__.values():
            if inspect.isclass(script_class) and issubclass(script_class, Script) and script_class is not Script:  # noqa: F821
                scripts_data.append(ScriptClassData(script_class, scriptfile.path, scriptfile.basedir, module))  # noqa: F821

    for scriptfile in scripts_list:
        try:
            if scriptfile.basedir != paths.script_path:  # noqa: F821
                sys.path = [scriptfile.basedir] + sys.path
            current_basedir = scriptfile.basedir
            script_module = script_loading.load_module(scriptfile.path)  # noqa: F821
            loaded_modules[scriptfile.path] = script_module  # noqa: F821
            register_scripts_from_module(script_module)
        except Exception:
            errors.report(f"Error loading script: {scriptfile.filename}", exc_info=True)  # noqa: F821
        finally:
            sys.path = syspath
            current_basedir = paths.script_path  # noqa: F821
