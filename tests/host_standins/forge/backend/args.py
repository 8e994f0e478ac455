"""``backend.args``: parsed flags and ``dynamic_args``.

Forge main: ``dynamic_args`` is a dict and the infotext side channel lives in
``backend.text_processing.classic_engine.last_extra_generation_params``.
Neo: ``dynamic_args`` is a class with attributes (and dict-style access
through its metaclass) including ``ops`` and ``last_extra_generation_params``.
"""

import argparse
import os

FLAVOR = os.environ.get("FORGE_STANDIN_FLAVOR", "neo")

args = argparse.Namespace(pin_shared_memory=False, cuda_stream=False,
                          attention=os.environ.get("FORGE_STANDIN_ATTENTION", "sage"))

if FLAVOR == "neo":
    class _DynamicArgsMeta(type):
        def get(cls, key, default=None):
            return getattr(cls, key, default)

        def __getitem__(cls, key):
            return getattr(cls, key, None)

        def __setitem__(cls, key, value):
            setattr(cls, key, value)

        def __contains__(cls, key):
            return hasattr(cls, key)

    class dynamic_args(metaclass=_DynamicArgsMeta):  # noqa: N801 - Neo's name
        embedding_dir = None
        forge_unet_storage_dtype = None
        ops = None
        last_extra_generation_params = {}
else:
    dynamic_args = dict(embedding_dir="./embeddings", emphasis_name="original")
