"""``modules/options.py`` of SD.Next: ``OptionInfo(default=None, label="", component=None,
component_args=None, onchange=None, section=None, refresh=None, folder=False, submit=None,
comment_before='', comment_after='', category_id=None, *args, **kwargs)`` (unknown arguments accepted)
with chainable ``info``/``link``/``needs_restart``/``needs_reload_ui``, and ``options_section``
(keeps the first two items of the section id)."""


def options_section(section_identifier, options_dict):
    if len(section_identifier) > 2:
        section_identifier = section_identifier[:2]
    for v in options_dict.values():
        v.section = section_identifier
    return options_dict


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, folder=False, submit=None, comment_before="", comment_after="", category_id=None,
                 *args, **kwargs):  # noqa: B026 - SD.Next's signature
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.refresh = refresh
        self.folder = folder
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.submit = submit
        self.dynamic = callable(component_args)
        args_ = {} if self.dynamic else (component_args or {})
        self.visible = args_.get("visible", True) and len(self.label) > 2

    def needs_reload_ui(self):
        return self

    def link(self, label, uri):
        self.comment_before += f"[<a href='{uri}' target='_blank'>{label}</a>]"
        return self

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def needs_restart(self):
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self
