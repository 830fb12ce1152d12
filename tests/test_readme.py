"""README.rst cannot rot: its set-up commands are the ones CI runs, and every
Python example in it runs alone (its own imports, database and models)
against the test servers."""
import pathlib
import re
import signal

import pytest

from conftest import (MYSQL_URL, POSTGRES_URL, MySQLBackend, Psycopg2Backend,
                      _require, _url_kwargs)
from playhouse_pool import PooledDatabase, PooledSqliteDatabase

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


def test_readme_names_every_key_pool_stats_returns(tmp_path):
    section = README.split('What it tells you\n-----------------\n', 1)[1]
    section = section.split('\n---', 1)[0]
    db = PooledSqliteDatabase(str(tmp_path / 'stats.db'))
    for key in db.pool_stats():
        assert '``%s``' % key in section, key


def test_readme_has_no_unfilled_placeholder():
    assert '\nBENCHMARK\n' not in README


def _have_asyncio():
    try:
        import playhouse_pool.asyncio  # noqa: F401
    except ImportError:
        return False
    return True


def _drop_async(namespace):
    """An asyncio example's tables dropped and its pool closed, on a loop
    of the test's own (the example's loop is gone: the pool starts
    afresh on this one)."""
    if not _have_asyncio():
        return
    import asyncio

    import peewee
    from playhouse_pool.asyncio import AsyncPooledDatabase
    async def drop(db, models):
        async with db:
            await db.run(db.drop_tables, models)
        await db.close_pool()

    for db in [v for v in namespace.values()
               if isinstance(v, AsyncPooledDatabase)]:
        asyncio.run(drop(db, [
            v for v in namespace.values() if isinstance(v, type)
            and issubclass(v, peewee.Model) and v._meta.database is db]))


# The README's servers are host 'db' (Postgres) and 'mysqldb' (MySQL),
# database and user 'app'; the test servers stand in for them.
def _stand_in(code):
    pg = _url_kwargs(POSTGRES_URL)
    my = _url_kwargs(MYSQL_URL)
    return (code.replace("'app', user='app', host='db'",
                         "%r, user=%r, host=%r, port=%r" % (
                             pg['database'], pg.get('user'), pg['host'],
                             pg.get('port', 5432)))
                .replace("'app', user='app', host='mysqldb'",
                         "%r, user=%r, host=%r, port=%r, password=%r" % (
                             my['database'], my.get('user'), my['host'],
                             my.get('port', 3306), my.get('password', '')))
                .replace('@db:5432/app', '@%s:%s/%s' % (
                    pg['host'], pg.get('port', 5432), pg['database'])))


@pytest.mark.parametrize('server_backend', [Psycopg2Backend], indirect=True)
def test_every_python_example_runs_alone(server_backend, tmp_path,
                                         monkeypatch):
    """Each block as a reader copies it: in a namespace of its own, so a
    block that leans on another's imports, database or models fails."""
    _require(MySQLBackend)                 # the ReconnectMixin example
    monkeypatch.chdir(tmp_path)            # examples may create files
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    namespaces = []
    examples = python_examples()
    assert len(examples) >= 10
    try:
        for number, code in enumerate(examples, 1):
            if 'playhouse_pool.asyncio' in code and not _have_asyncio():
                continue            # peewee 3, or 4 before 4.3
            code = _stand_in(code)
            namespace = {'__name__': 'readme_example_%d' % number}
            namespaces.append(namespace)
            try:
                exec(compile(code, 'README example %d' % number, 'exec'),
                     namespace)
            except Exception as exc:
                pytest.fail('README example %d failed: %r\n%s'
                            % (number, exc, code))
        # The shutdown example's handler drains and closes its pool.
        shutdown = [ns for ns in namespaces if 'shutdown' in ns]
        assert len(shutdown) == 1
        db = shutdown[0]['db']
        db.connect()
        shutdown[0]['shutdown'](signal.SIGTERM, None)
        assert db.is_closed() and db.pool_stats()['open'] == 0
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        for namespace in namespaces:
            _drop_async(namespace)
            user = namespace.get('User')
            if user is not None:
                with user._meta.database.connection_context():
                    user._meta.database.drop_tables([user])
            for value in namespace.values():
                if isinstance(value, PooledDatabase):
                    value.close_all()
