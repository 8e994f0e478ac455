"""The CI skip guard (tests/ci_skips.py) on tiny test files run by a separate pytest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ci_skips

TESTS = Path(__file__).resolve().parent

FILES = {
    "test_inside.py": """
        import pytest

        def test_runs():
            pass

        def test_skips_inside():
            pytest.skip("no widget here")
    """,
    "test_marker.py": """
        import pytest

        @pytest.mark.skipif(True, reason="marker says no")
        def test_marked():
            pass
    """,
    "test_module_level.py": """
        import pytest

        pytest.importorskip("celebbasis_no_such_module")

        def test_never_collected():
            pass
    """,
    "test_allowed.py": """
        import pytest

        def test_allowed_skip():
            pytest.skip("allowed reason")
    """,
    "test_expected_failure.py": """
        import pytest

        @pytest.mark.xfail(reason="known", strict=True)
        def test_known_bug():
            assert False
    """,
    # the allow-list is extended here exactly as an entry in ci_skips.ALLOWED_SKIPS would be
    "conftest.py": """
        import ci_skips

        ci_skips.ALLOWED_SKIPS["test_allowed.py::test_allowed_skip"] = "a test of the allow-list"
    """,
    "pytest.ini": "[pytest]\n",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ci-skips")
    for name, text in FILES.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def run_pytest(folder: Path, files: list, ci: bool):
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-p", "ci_skips",
                             *files], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def test_in_ci_a_skip_in_a_test_or_by_a_marker_fails_the_run(project):
    code, out = run_pytest(project, ["test_inside.py", "test_marker.py", "test_allowed.py",
                                     "test_expected_failure.py"], ci=True)
    assert code == pytest.ExitCode.TESTS_FAILED, out
    assert "FAILED test_inside.py::test_skips_inside - skipped in CI: no widget here" in out
    assert "ERROR test_marker.py::test_marked - skipped in CI: marker says no" in out
    assert "tests/ci_skips.py ALLOWED_SKIPS" in out
    assert "1 passed, 1 skipped, 1 xfailed" in out and "SKIPPED [1] test_allowed.py" in out  # allow-listed: a skip


def test_in_ci_a_module_level_skip_fails_collection(project):
    code, out = run_pytest(project, ["test_module_level.py"], ci=True)
    assert code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), out
    assert "ERROR collecting test_module_level.py" in out
    assert "skipped in CI: could not import 'celebbasis_no_such_module'" in out
    assert "skips that fail the run (CI=true)" in out


def test_in_ci_only_allow_listed_skips_pass(project):
    code, out = run_pytest(project, ["test_allowed.py", "test_expected_failure.py"], ci=True)
    assert code == pytest.ExitCode.OK, out
    assert "1 skipped, 1 xfailed" in out and "skipped in CI" not in out


def test_without_ci_a_skip_is_just_a_skip(project):
    code, out = run_pytest(project, ["test_inside.py", "test_marker.py", "test_allowed.py"], ci=False)
    assert code == pytest.ExitCode.OK, out
    assert "1 passed, 3 skipped" in out and "skipped in CI" not in out
    code, out = run_pytest(project, ["test_module_level.py"], ci=False)
    assert code == pytest.ExitCode.NO_TESTS_COLLECTED, out
    assert "SKIPPED [1] test_module_level.py" in out


def test_this_suite_runs_under_the_guard(request):
    assert request.config.pluginmanager.get_plugin("celebbasis-ci-skips") is ci_skips
    for pattern, why in ci_skips.ALLOWED_SKIPS.items():
        assert "::" in pattern and why.strip(), pattern  # each entry names its tests and says why
