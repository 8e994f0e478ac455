"""modules/profiling.py (only ``webpath``)."""


def webpath():
    return ""
