"""modules/memmon.py: a monitor that is always disabled (no CUDA here)."""


class MemUsageMonitor:
    def __init__(self, name, device, opts):
        self.name = name
        self.device = device
        self.opts = opts
        self.disabled = True

    def start(self):
        pass

    def monitor(self):
        pass

    def stop(self):
        return {}
