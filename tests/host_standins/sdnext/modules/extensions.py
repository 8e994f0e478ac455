"""``modules/extensions.py`` of SD.Next, reduced: ``active()`` lists the folders of ``<data>/extensions``
(the real one also reads extensions-builtin and the disabled list); ``Extension.list_files``."""

import os

from modules import paths


class Extension:
    def __init__(self, name, path, enabled=True, is_builtin=False):
        self.name, self.path, self.enabled, self.is_builtin = name, path, enabled, is_builtin

    def list_files(self, subdir, extension):
        from modules.scripts_manager import ScriptFile

        dirpath = os.path.join(self.path, subdir)
        if not os.path.isdir(dirpath):
            return []
        return [ScriptFile(self.path, filename, os.path.join(dirpath, filename), "50")
                for filename in sorted(os.listdir(dirpath))
                if os.path.splitext(filename)[1].lower() == extension]


def active():
    if not os.path.isdir(paths.extensions_dir):
        return []
    return [Extension(name, os.path.join(paths.extensions_dir, name)) for name in sorted(os.listdir(paths.extensions_dir))
            if os.path.isdir(os.path.join(paths.extensions_dir, name))]
