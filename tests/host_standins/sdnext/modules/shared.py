"""``modules.shared`` of SD.Next: ``cmd_opts`` (parsed after extensions' ``preload.py``), ``opts`` (an
``options_handler.Options`` whose templates include ``embeddings_dir``, offload mode, ...), ``OptionInfo``
/ ``options_section`` (from ``modules.options``, as SD.Next re-exports them), ``state``, ``api`` (set by
the server), ``native`` (diffusers backend) and ``sd_model`` / ``sd_loaded`` / ``sd_model_type`` as
properties of the module (SD.Next swaps the module's class for ``modules.modeldata.Shared``)."""

import os
import shlex
import sys

from modules import cmd_args, paths, shared_state
from modules.options import OptionInfo, options_section  # noqa: F401 - SD.Next's shared exposes both
from modules.options_handler import Options

_root = paths.data_path
native = True
cmd_opts = cmd_args.parse_args(shlex.split(os.environ.get("SDNEXT_STANDIN_ARGS", "")))
cmd_opts.data_dir = _root

options_templates = options_section(("sd", "Models & Loading"), {
    "embeddings_dir": OptionInfo(os.path.join(paths.models_path, "embeddings"), "Folder with textual inversion embeddings",
                                 folder=True),
    "sd_model_checkpoint": OptionInfo(os.environ.get("SDNEXT_STANDIN_CHECKPOINT", "None"), "Base model"),
    "diffusers_offload_mode": OptionInfo(os.environ.get("SDNEXT_STANDIN_OFFLOAD", "balanced"), "Model offload mode"),
    "diffusers_enable_embed": OptionInfo(True, "Enable embeddings support"),
    "diffusers_convert_embed": OptionInfo(False, "Auto-convert SD15 embeddings to SDXL"),
    "sd_textencoder_cache_size": OptionInfo(4, "Text encoder cache size"),
    "inference_mode": OptionInfo("no-grad", "Torch inference mode"),
    "subpath": OptionInfo("", "Mount URL subpath"),
})
opts = Options(options_templates)
state = shared_state.State()
api = None
demo = None

from modules.modeldata import Shared  # noqa: E402

sys.modules[__name__].__class__ = Shared
