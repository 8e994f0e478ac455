"""Build hook: the wheel carries the WebUI's script and style for ``celebbasis ui``.

The WebUI loads ``javascript/celebbasis.js`` and ``style.css`` from the
extension's root, so they live there; a plain ``pip install .`` would leave
them behind (the standalone UI then has no live progress). ``build_py`` copies
both into ``celebbasis_ext/webui/assets/``, where ``standalone_ui.asset_path``
looks first. Everything else is declared in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ASSETS = {"javascript/celebbasis.js": "celebbasis.js", "style.css": "style.css"}


class BuildWithAssets(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "celebbasis_ext" / "webui" / "assets"
        self.mkpath(str(target))
        for source, name in ASSETS.items():
            self.copy_file(source, str(target / name))


setup(cmdclass={"build_py": BuildWithAssets})
