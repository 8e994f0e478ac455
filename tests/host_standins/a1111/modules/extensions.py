"""modules/extensions.py (only ``find_extension``, used to name callbacks)."""

import os

extensions = []


class Extension:
    def __init__(self, name, path, enabled=True, is_builtin=False):
        self.name = name
        self.canonical_name = name.lower()
        self.path = os.path.realpath(path)
        self.enabled = enabled
        self.is_builtin = is_builtin


def find_extension(filename):
    filename = os.path.realpath(filename)
    for ext in extensions:
        if filename.startswith(ext.path + os.sep) or filename == ext.path:
            return ext
    return None
