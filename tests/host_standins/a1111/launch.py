"""The webui root's ``launch.py`` as an extension's ``install.py`` sees it (``import launch``).

``is_installed(package)`` is faithful (importlib.metadata distribution, then
find_spec). ``run_pip(command, desc=None, live=...)`` never runs pip here: it
records ``'"<python>" -m pip <command> --prefer-binary'`` in ``pip_calls`` and,
when ``$A1111_STANDIN_PIP_LOG`` names a file, appends the line to it. With
``args.skip_install`` it does nothing, as in the host.
"""

import argparse
import importlib.metadata
import importlib.util
import os
import sys

python = sys.executable
index_url = os.environ.get('INDEX_URL', "")
args = argparse.Namespace(skip_install=bool(os.environ.get("A1111_STANDIN_SKIP_INSTALL")))
pip_calls = []


def is_installed(package):
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            return False

        return spec is not None

    return dist is not None


def run_pip(command, desc=None, live=False):
    if args.skip_install:
        return

    index_url_line = f' --index-url {index_url}' if index_url != '' else ''
    line = f'"{python}" -m pip {command} --prefer-binary{index_url_line}'
    print(f"Installing {desc}")
    pip_calls.append(line)
    log = os.environ.get("A1111_STANDIN_PIP_LOG")
    if log:
        with open(log, "a", encoding="utf8") as file:
            file.write(line + "\n")
    return ""
