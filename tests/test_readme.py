"""README.rst's set-up commands are the ones CI runs."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _literal_commands(text):
    # Indented literal blocks after '::' holding one command line each.
    return re.findall(r'::\n\n    (.+)\n', text)


def test_readme_gives_exactly_two_setup_commands():
    commands = _literal_commands((ROOT / 'README.rst').read_text())
    assert len(commands) == 2
    assert 'python -m playhouse_pool' in commands[0]
    assert 'pytest' in commands[1]


def test_ci_runs_the_readme_test_command():
    test_command = _literal_commands((ROOT / 'README.rst').read_text())[1]
    ci_lines = (ROOT / '.ci' / 'run').read_text().splitlines()
    assert test_command in ci_lines
