"""``modules/shared.py`` of Forge main / Neo: ``cmd_opts`` (parsed after extensions' preload), ``opts`` and
``state`` (filled by ``shared_init.initialize()``), ``OptionInfo`` / ``options_section`` re-exported from
``modules.options`` as in the real file, and ``sd_model`` as a property of the module (Forge's
``shared_items.Shared``): it returns ``model_data.get_sd_model()``, which in Forge never loads anything
(``FakeInitialModel`` until ``forge_model_reload()``)."""

import os
import sys

from modules import options, shared_cmd_options
from modules.paths_internal import data_path, extensions_builtin_dir, extensions_dir, models_path, script_path  # noqa: F401

cmd_opts = shared_cmd_options.cmd_opts
parser = shared_cmd_options.parser

batch_cond_uncond = True
parallel_processing_allowed = True
styles_filename = cmd_opts.styles_file = cmd_opts.styles_file or [os.path.join(data_path, "styles.csv")]
config_filename = cmd_opts.ui_settings_file
hide_dirs = {"visible": not cmd_opts.hide_ui_dir_config}

demo = None
device = None
state = None
options_templates: dict = None
opts: options.Options = None
restricted_opts: set = None
settings_components: dict = None
tab_names = []
total_tqdm = None
mem_mon = None

options_section = options.options_section
OptionInfo = options.OptionInfo
OptionHTML = options.OptionHTML


class Shared(sys.modules[__name__].__class__):
    @property
    def sd_model(self):
        import modules.sd_models

        return modules.sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        import modules.sd_models

        modules.sd_models.model_data.set_sd_model(value)


sys.modules[__name__].__class__ = Shared
