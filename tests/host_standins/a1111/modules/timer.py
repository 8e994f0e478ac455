"""modules/timer.py (only ``startup_timer.record``)."""


class Timer:
    def __init__(self):
        self.records = {}

    def record(self, category, extra_time=0, disable_log=False):
        self.records[category] = self.records.get(category, 0) + extra_time

    def summary(self):
        return ""


startup_timer = Timer()
