"""modules/shared.py: the global state an extension reads.

As in 1.10.1, ``shared.sd_model`` is a property of the module (its class is
swapped at the end): reading it loads the default model on first use
(``sd_models.model_data.get_sd_model()``), so an extension must not read it
while registering callbacks or building its tab.
"""

import os
import sys

from modules import shared_cmd_options, options
from modules.paths_internal import models_path, script_path, data_path, sd_configs_path, sd_default_config, sd_model_file, default_sd_model_file, extensions_dir, extensions_builtin_dir  # noqa: F401

cmd_opts = shared_cmd_options.cmd_opts
parser = shared_cmd_options.parser

batch_cond_uncond = True
parallel_processing_allowed = True
styles_filename = cmd_opts.styles_file = cmd_opts.styles_file if len(cmd_opts.styles_file) > 0 else [os.path.join(data_path, 'styles.csv')]
config_filename = cmd_opts.ui_settings_file
hide_dirs = {"visible": not cmd_opts.hide_ui_dir_config}

demo = None
device = None
weight_load_location = None
xformers_available = False
hypernetworks = {}
loaded_hypernetworks = []
state = None
prompt_styles = None
interrogator = None
face_restorers = []
options_templates: dict = None
opts: options.Options = None
restricted_opts: set = None
settings_components: dict = None
tab_names = []
sd_upscalers = []
clip_model = None
progress_print_out = sys.stdout
total_tqdm = None
mem_mon = None

options_section = options.options_section
OptionInfo = options.OptionInfo
OptionHTML = options.OptionHTML

hf_endpoint = os.getenv('HF_ENDPOINT', 'https://huggingface.co')


def natural_sort_key(s, regex=None):
    import re
    regex = regex or re.compile('([0-9]+)')
    return [int(text) if text.isdigit() else text.lower() for text in regex.split(s)]


def walk_files(path, allowed_extensions=None):
    if not os.path.exists(path):
        return
    if allowed_extensions is not None:
        allowed_extensions = set(allowed_extensions)
    for root, _, files in sorted(os.walk(path, followlinks=True), key=lambda x: natural_sort_key(x[0])):
        for filename in sorted(files, key=natural_sort_key):
            if allowed_extensions is not None:
                _, ext = os.path.splitext(filename)
                if ext.lower() not in allowed_extensions:
                    continue
            yield os.path.join(root, filename)


class Shared(sys.modules[__name__].__class__):
    """``sd_model`` as a property that loads the model on demand (modules/shared_items.py)."""

    sd_model_val = None

    @property
    def sd_model(self):
        import modules.sd_models

        return modules.sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        import modules.sd_models

        modules.sd_models.model_data.set_sd_model(value)


sys.modules['modules.shared'].__class__ = Shared
