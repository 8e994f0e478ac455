"""``modules/options_handler.py`` of SD.Next, reduced: ``Options(templates)``: ``data`` starts with every
template's default; ``opts.<key>`` reads ``data``, then the template default; setting a known key writes
``data``; ``add_option(key, info)`` **only** registers the template (unlike A1111 it does not put the
default into ``data``); ``get(key)``; ``set(key, value)`` returns whether it changed."""


class Options:
    def __init__(self, options_templates=None):
        super().__setattr__("data_labels", dict(options_templates or {}))
        super().__setattr__("data", {k: v.default for k, v in self.data_labels.items()})

    def __getattr__(self, item):
        if item in ("data", "data_labels"):
            return super().__getattribute__(item)
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        return super().__getattribute__(item)

    def get(self, item):
        return self.__getattr__(item)

    def __setattr__(self, key, value):
        if key in self.data_labels or key in self.data:
            self.data[key] = value
            return
        super().__setattr__(key, value)

    def set(self, key, value, force=False):
        oldval = self.data.get(key, self.data_labels[key].default if key in self.data_labels else None)
        if oldval == value and not force:
            return False
        setattr(self, key, value)
        return True

    def add_option(self, key, info):
        self.data_labels[key] = info
