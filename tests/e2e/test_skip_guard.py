"""scripts/test fails on a skip that is not allow-listed (tests/skip_guard.py): run pytest on a throwaway
test directory with the plugin, with and without an allow-list entry. No stack needed: seconds."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]

SKIPPING = '''
import pytest

def test_runs():
    assert True

def test_skips():
    pytest.skip("no tool here")
'''
MODULE_SKIPPING = '''
import pytest
pytest.importorskip("a_module_that_is_not_installed_anywhere")

def test_never_runs():
    assert True
'''


def run_pytest(directory: Path, allowlist: str) -> subprocess.CompletedProcess:
    allowlist_file = directory / "allow.txt"
    allowlist_file.write_text(allowlist)
    env = {**os.environ, "BM_SKIP_ALLOWLIST": str(allowlist_file),
           "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-p", "skip_guard", "-c", os.devnull,
         "--rootdir", str(directory), str(directory)],
        capture_output=True, text=True, timeout=60, env=env, cwd=directory,
    )


def test_a_skip_fails_the_run_and_is_named(tmp_path):
    (tmp_path / "test_one.py").write_text(SKIPPING)
    result = run_pytest(tmp_path, "# nothing allowed\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SKIP NOT ALLOWED test_one.py::test_skips: no tool here" in result.stdout, result.stdout


def test_a_module_skipped_at_import_fails_the_run(tmp_path):
    (tmp_path / "test_module.py").write_text(MODULE_SKIPPING)
    result = run_pytest(tmp_path, "")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SKIP NOT ALLOWED test_module.py" in result.stdout, result.stdout


def test_an_allow_listed_skip_passes(tmp_path):
    (tmp_path / "test_one.py").write_text(SKIPPING)
    result = run_pytest(tmp_path, "test_one.py::test_skips | needs hardware this machine lacks\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout, result.stdout


def test_an_entry_without_a_reason_is_refused(tmp_path):
    (tmp_path / "test_one.py").write_text(SKIPPING)
    result = run_pytest(tmp_path, "test_one.py::test_skips\n")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "expected 'NODE_ID | reason'" in result.stderr, result.stderr


def test_the_projects_allow_list_is_well_formed_and_every_entry_has_a_reason():
    sys.path.insert(0, str(TESTS_DIR))
    from skip_guard import DEFAULT_ALLOWLIST, allowed_skips

    assert all(reason for reason in allowed_skips(DEFAULT_ALLOWLIST).values())
