"""``modules/shared_init.py`` of Forge main / Neo: ``initialize()`` fills ``shared.opts`` (from
``shared_options`` and config.json), ``shared.state`` and ``shared.mem_mon``."""

from modules import shared


def initialize():
    from modules import options, shared_options

    shared.options_templates = shared_options.options_templates
    shared.opts = options.Options(shared_options.options_templates, shared_options.restricted_opts)
    shared.restricted_opts = shared_options.restricted_opts
    try:
        shared.opts.load(shared.config_filename)
    except FileNotFoundError:
        pass

    from modules import devices

    shared.device = devices.device

    from modules import shared_state

    shared.state = shared_state.State()

    from modules import memmon

    shared.mem_mon = memmon.MemUsageMonitor("MemMon", devices.device, shared.opts)
    shared.mem_mon.start()
