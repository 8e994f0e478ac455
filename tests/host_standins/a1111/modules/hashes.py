"""modules/hashes.py: sha256 of a file (the real one caches by title in cache.json)."""

import hashlib
import os

_cache = {}


def sha256(filename, title, use_addnet_hash=False):
    key = (filename, os.path.getmtime(filename), title)
    if key not in _cache:
        digest = hashlib.sha256()
        with open(filename, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        _cache[key] = digest.hexdigest()
    return _cache[key]
