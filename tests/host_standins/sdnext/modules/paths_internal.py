# no longer used, all paths are defined in paths.py
# (SD.Next keeps this file empty: ``from modules import paths_internal`` works, ``paths_internal.data_path`` does not)
