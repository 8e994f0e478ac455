"""``modules/cmd_args.py`` of SD.Next, reduced to the flags an extension meets.

Authentication is ``--auth "u:p,u2:p2"`` / ``--auth-file`` (for the UI and the API alike); ``--api`` and
``--api-auth`` survive only as hidden compatibility flags (``--api`` defaults to True, ``--api-auth`` is
never read). There is no ``--nowebui`` (``--api-only``) and no ``--embeddings-dir`` (the folder is the
setting ``embeddings_dir``).
"""

import argparse
import os

from modules import paths

parser = argparse.ArgumentParser(description="SD.Next", conflict_handler="resolve", add_help=False)
add = parser.add_argument
add("--data-dir", type=str, default=paths.data_path)
add("--models-dir", type=str, default=None)
add("--config", type=str, default=os.path.join(paths.data_path, "config.json"))
add("--secrets", type=str, default=os.path.join(paths.data_path, "secrets.json"))
add("--auth", type=str, default=os.environ.get("SD_AUTH", None))
add("--auth-file", type=str, default=os.environ.get("SD_AUTHFILE", None))
add("--listen", action="store_true", default=False)
add("--server-name", type=str, default=None)
add("--docs", action="store_true", default=False)
add("--freeze", action="store_true", default=False)
add("--hide-ui-dir-config", action="store_true", default=False)
add("--profile", action="store_true", default=False)
add("--lowvram", action="store_true", default=False)
add("--medvram", action="store_true", default=False)
add("--share", action="store_true", default=False)
add("--insecure", action="store_true", default=False)
add("--api", action="store_true", help=argparse.SUPPRESS, default=True)
add("--api-auth", type=str, help=argparse.SUPPRESS, default=None)
add("--api-only", default=False, help=argparse.SUPPRESS)


def parse_args(argv):
    from modules import script_loading

    script_loading.preload_extensions(paths.extensions_dir, parser)
    return parser.parse_args(argv)
