"""README.rst cannot rot: its set-up commands are the ones CI runs, and every
Python example in it runs, in order, against the test servers."""
import pathlib
import re
import signal

import pytest

from conftest import POSTGRES_URL, Psycopg2Backend, _url_kwargs
from playhouse_pool import PooledDatabase

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / 'README.rst').read_text()


def setup_commands():
    """The literal command lines of the 'Try it' section."""
    section = README.split('Try it\n------\n', 1)[1].split('\n---', 1)[0]
    return re.findall(r'::\n\n    (.+)\n', section)


def python_examples():
    """Every ``.. code-block:: python`` body, dedented, in order."""
    blocks = re.findall(r'\.\. code-block:: python\n\n((?:    .*\n|\n)+)',
                        README)
    return [re.sub(r'^    ', '', b, flags=re.M) for b in blocks]


def test_readme_gives_exactly_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2
    assert 'python -m playhouse_pool' in commands[0]
    assert 'pytest' in commands[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = (ROOT / '.ci' / 'run').read_text().splitlines()
    assert setup_commands()[1] in ci_lines


def test_readme_has_no_unfilled_placeholder():
    assert '\nBENCHMARK\n' not in README


# The README's server is host 'db', database and user 'app'; the test
# server stands in for it.
def _stand_in(code):
    pg = _url_kwargs(POSTGRES_URL)
    return (code.replace("'app', user='app', host='db'",
                         "%r, user=%r, host=%r, port=%r" % (
                             pg['database'], pg.get('user'), pg['host'],
                             pg.get('port', 5432)))
                .replace('@db:5432/app', '@%s:%s/%s' % (
                    pg['host'], pg.get('port', 5432), pg['database'])))


@pytest.mark.parametrize('server_backend', [Psycopg2Backend], indirect=True)
def test_every_python_example_runs(server_backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)            # examples may create files
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    namespace = {}
    examples = python_examples()
    assert len(examples) >= 10
    try:
        for number, code in enumerate(examples, 1):
            code = _stand_in(code)
            try:
                exec(compile(code, 'README example %d' % number, 'exec'),
                     namespace)
            except Exception as exc:
                pytest.fail('README example %d failed: %r\n%s'
                            % (number, exc, code))
        # The shutdown example's handler drains and closes the pool.
        db = namespace['db']
        db.connect()
        namespace['shutdown'](signal.SIGTERM, None)
        assert db.is_closed() and db.pool_stats()['open'] == 0
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        user = namespace.get('User')
        if user is not None:
            with user._meta.database.connection_context():
                user._meta.database.drop_tables([user])
        for value in namespace.values():
            if isinstance(value, PooledDatabase):
                value.close_all()
