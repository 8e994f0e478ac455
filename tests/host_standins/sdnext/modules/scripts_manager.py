"""``modules/scripts_manager.py`` of SD.Next (``modules/scripts.py`` re-exports it): ``basedir()``,
``Script``, ``load_scripts()``: clear the callbacks, then import each extension's ``scripts/*.py`` with the
extension folder first on ``sys.path`` and ``current_basedir`` set **only during that import** (restored
after each one; unlike Forge, nothing stays on ``sys.path``). There is no ``loaded_modules`` table."""

import os
import sys
from typing import NamedTuple

from modules import errors, extensions, paths, script_callbacks, script_loading


class Script:
    name = None
    filename = None
    alwayson = False

    def title(self):
        raise NotImplementedError()


class ScriptFile(NamedTuple):
    basedir: str
    filename: str
    path: str
    priority: str


current_basedir = paths.script_path
scripts_data = []


def basedir():
    return current_basedir


def list_scripts(scriptdirname, extension):
    found = []
    for ext in extensions.active():
        found += ext.list_files(scriptdirname, extension)
    return sorted((s for s in found if os.path.isfile(s.path)), key=lambda item: "3" + item.priority + item.path.lower())


def load_scripts():
    global current_basedir
    scripts_data.clear()
    script_callbacks.clear_callbacks()
    scripts_list = list_scripts("scripts", ".py")
    syspath = sys.path
    for scriptfile in scripts_list:
        try:
            if scriptfile.basedir != paths.script_path:
                sys.path = [scriptfile.basedir] + sys.path
            current_basedir = scriptfile.basedir
            module = script_loading.load_module(scriptfile.path)
            for value in module.__dict__.values():
                if isinstance(value, type) and issubclass(value, Script) and value is not Script:
                    scripts_data.append((value, scriptfile.path, scriptfile.basedir, module))
        except Exception as e:
            errors.display(e, f"Load script: {scriptfile.filename}")
        finally:
            current_basedir = paths.script_path
            sys.path = syspath
