"""The built wheel: what ``celebbasis ui`` needs after a plain ``pip install .`` is inside it and is found.

Builds the wheel from a copy of the sources (nothing is written into the checkout), installs it with
``pip install --no-deps --target`` (the site-packages layout), then asks the installed package, in a
Python that cannot see the checkout (``-I -S``), for its script and style through ``ui_assets()``:
the function ``build_app`` calls.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "style.css", "javascript", "celebbasis_ext"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out), str(source)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("celebbasis_ext-*.whl")
    return built


def test_wheel_carries_the_ui_script_style_and_data(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("celebbasis_ext/webui/assets/celebbasis.js") == (ROOT / "javascript" / "celebbasis.js").read_bytes()
        assert archive.read("celebbasis_ext/webui/assets/style.css") == (ROOT / "style.css").read_bytes()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "celebbasis_ext/data/celeb_names.txt" in names
    assert {f"celebbasis_ext/data/prompts_{kind}.txt" for kind in ("single", "style", "two-person")} <= names
    assert "celebbasis_ext/evaluate/runner.py" in names  # celebbasis eval
    assert "celebbasis = celebbasis_ext.cli:main" in entry_points
    assert not any(name.startswith(("tests/", "scripts/", "javascript/")) for name in names)


def test_installed_package_finds_them(wheel, tmp_path):
    site = tmp_path / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    probe = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "import celebbasis_ext.standalone_ui as ui;"
        "script, css = ui.ui_assets();"
        "print(json.dumps({'module': ui.__file__, 'js': str(ui.asset_path('celebbasis.js')),"
        " 'css': str(ui.asset_path('style.css')), 'script': script, 'style': css}))"
    )
    result = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(site)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert Path(found["module"]).is_relative_to(site)  # the installed copy, not the checkout
    assert Path(found["js"]) == site / "celebbasis_ext" / "webui" / "assets" / "celebbasis.js"
    assert Path(found["css"]) == site / "celebbasis_ext" / "webui" / "assets" / "style.css"
    assert found["script"] == (ROOT / "javascript" / "celebbasis.js").read_text(encoding="utf-8")
    assert found["style"] == (ROOT / "style.css").read_text(encoding="utf-8")
    assert "not found" not in result.stderr
