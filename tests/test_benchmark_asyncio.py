"""The benchmark's asyncio scenarios (``python -m playhouse_pool
--asyncio``): each runs through every asyncio pool, ours included, and
reports well-formed figures; ours reads "n/a" with the reason where
``playhouse_pool.asyncio`` cannot be imported; a missing driver is refused
naming the extra; the lean asyncio reference hands off in order, even to a
waiter cancelled as it is served. Behaviour only: the targets belong to
the benchmark itself."""
import asyncio
import sys
import types

import peewee
import pytest

from conftest import (MYSQL_URL, POSTGRES_URL, MySQLBackend, Psycopg2Backend,
                      _require)
from playhouse_pool.benchmark import (aio_pools, aio_scenarios, cli,
                                      scenarios)
from playhouse_pool.benchmark.target import Target
from test_benchmark import by_id, run_json

pwasyncio = pytest.importorskip(
    'playhouse.pwasyncio',
    reason='--asyncio needs playhouse.pwasyncio, which is peewee 4+ '
           '(this is %s)' % peewee.__version__)


@pytest.fixture
def short_asyncio_scenarios(monkeypatch):
    """A3 shortened: it still ages every connection several times."""
    monkeypatch.setattr(scenarios, 'CONNECT_DELAY', 0.02)
    monkeypatch.setattr(aio_scenarios, 'A3_SECONDS', 0.6)
    monkeypatch.setattr(aio_scenarios, 'A3_STALE', 0.2)


def assert_well_formed(sid, figures):
    assert 'error' not in figures, (sid, figures)
    if sid == 'A1':
        assert figures['rps'] > 0 and figures['requests'] > 0
        assert (0 <= figures['wait_p50_ms'] <= figures['wait_p99_ms']
                <= figures['wait_max_ms'])
        assert figures['fairness'] >= 1
    elif sid == 'A2':
        counts = {k: v for k, v in figures.items()}
        assert all(isinstance(v, int) and v >= 0 for v in counts.values()), \
            figures
        # Every cancel landed somewhere; each either cancelled its request
        # or was swallowed.
        landed = (figures['at_waiting'] + figures['at_query']
                  + figures['at_release'])
        assert figures['cancelled'] + figures['swallowed'] <= landed
        assert figures['cancelled'] > 0
        assert figures['count_gap'] == abs(figures['pool']
                                           - figures['server'])
        assert 0 <= figures['next_ok'] <= 200
        assert 0 <= figures.get('killed_failed', 0) <= 8
    else:
        assert figures['checkouts'] > 0 and figures['worst_ms'] >= 0
        assert isinstance(figures['slow'], int)


def assert_ours_judged(scenario, kind):
    """Our row ran and its targets have values and verdicts (off Postgres
    only the behaviours'; A2's kill has no figure on SQLite)."""
    assert 'pending' not in scenario['results']['playhouse_pool']
    for target in scenario['targets']:
        assert target['pending'] is None
        if kind == 'sqlite' and 'killed' in target['target']:
            assert target['value'] is None
            continue
        assert target['value'] is not None, target
        if kind == 'postgres' or scenario['id'] == 'A2':
            assert isinstance(target['pass'], bool), target


def test_asyncio_runs_a1_and_a2_on_sqlite_through_ours_and_every_peer(
        capsys):
    status, report = run_json(capsys, '--asyncio', '--duration', '0.2')
    assert report['asyncio'] is True
    assert 'aiosqlite' in report['environment']
    found = by_id(report)
    assert list(found) == ['A1', 'A2', 'A3']
    assert 'networked database' in found['A3']['skipped']
    for sid in ('A1', 'A2'):
        scenario = found[sid]
        assert list(scenario['results']) == ['playhouse_pool', 'lean',
                                             'pwasyncio']
        for name in scenario['results']:
            assert_well_formed(sid, scenario['results'][name])
        assert_ours_judged(scenario, 'sqlite')
    assert set(found['A1']['ratios']) == {'playhouse_pool/lean',
                                          'playhouse_pool/pwasyncio'}
    cli.main(['--asyncio', '--scenario', 'A1', '--duration', '0.1'])
    table = capsys.readouterr().out
    [ours] = [line for line in table.splitlines()
              if line.startswith('    playhouse_pool ')]
    assert 'n/a' not in ours and 'ERROR' not in ours
    assert 'req/s >= 1.5 x pwasyncio' in table


def test_ours_reads_n_a_with_the_reason_where_it_cannot_be_imported(
        capsys, monkeypatch):
    import peewee
    monkeypatch.setattr(peewee, '__version__', '4.2.0')
    for name in list(sys.modules):
        if name.startswith('playhouse_pool.asyncio'):
            monkeypatch.delitem(sys.modules, name)
    status, report = run_json(capsys, '--asyncio', '--scenario', 'A1',
                              '--duration', '0.1')
    [scenario] = report['scenarios']
    reason = 'playhouse_pool.asyncio needs peewee >= 4.3'
    assert scenario['results']['playhouse_pool'] == {'pending': reason}
    assert all(t['pending'] == reason and t['pass'] is None
               for t in scenario['targets'])
    assert_well_formed('A1', scenario['results']['lean'])


@pytest.mark.server
@pytest.mark.parametrize('server', ['postgres', 'mysql'])
def test_every_asyncio_scenario_runs_on_a_server_beside_every_peer(
        capsys, short_asyncio_scenarios, server):
    if server == 'postgres':
        _require(Psycopg2Backend)
        pytest.importorskip('asyncpg')
        url, peers = POSTGRES_URL, ['lean', 'pwasyncio', 'psycopg_pool',
                                    'asyncpg']
    else:
        _require(MySQLBackend)
        pytest.importorskip('aiomysql')
        url, peers = MYSQL_URL, ['lean', 'pwasyncio']
    status, report = run_json(capsys, '--asyncio', '--url', url,
                              '--duration', '0.2')
    found = by_id(report)
    assert list(found) == ['A1', 'A2', 'A3']
    for sid, scenario in found.items():
        assert scenario['skipped'] is None
        assert list(scenario['results']) == ['playhouse_pool'] + peers
        for name in scenario['results']:
            assert_well_formed(sid, scenario['results'][name])
        assert_ours_judged(scenario, server)


def _stand_in_for_ours():
    """A module shaped as playhouse_pool.asyncio (the pwasyncio class
    names, our keywords, pool_stats()), built on the lean reference: the
    table's layout, with figures that say nothing about ours."""
    from playhouse_pool.benchmark.aio_lean import LeanAsyncSqliteDatabase

    class AsyncSqliteDatabase(LeanAsyncSqliteDatabase):
        def __init__(self, database, max_connections, min_connections,
                     stale_timeout, timeout, **kwargs):
            super().__init__(database, max_connections=max_connections,
                             **kwargs)

        def pool_stats(self):
            return self.lean_counts()

    module = types.ModuleType('stand_in_asyncio')
    module.AsyncSqliteDatabase = AsyncSqliteDatabase
    return module


def test_the_asyncio_tables_say_which_way_each_ratio_is_better(
        capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'stand_in_asyncio',
                        _stand_in_for_ours())
    monkeypatch.setattr(aio_pools, 'OURS_MODULE', 'stand_in_asyncio')
    args = ['--asyncio', '--scenario', 'A1,A2', '--duration', '0.2']
    assert cli.main(args) == 0
    a1, a2 = capsys.readouterr().out.split('\nA1  ', 1)[1].split('\nA2  ')
    a1_lines = a1.splitlines()
    header = next(line for line in a1_lines
                  if line.lstrip().startswith('pool'))
    [better] = [line for line in a1_lines if 'ours better if' in line]
    # A1 as S2: req/s is better higher, waits lower; fairness not compared.
    for label, direction in [('req/s', '> 1x'), ('wait p50', '< 1x'),
                             ('wait max', '< 1x')]:
        end = header.index(label) + len(label)
        assert better[end - len(direction):end] == direction
    assert len(better) < header.index('most/fewest')
    # A2 compares no figure: no ratio rows, nothing to read them by.
    assert 'ours /' not in a2 and 'ours better if' not in a2

    status, report = run_json(capsys, *args)
    found = by_id(report)
    assert found['A1']['better'] == {
        'rps': 'higher', 'wait_p50_ms': 'lower', 'wait_p99_ms': 'lower',
        'wait_max_ms': 'lower'}
    assert found['A2']['better'] == {} and found['A2']['ratios'] == {}
    assert report['left_out'] == {}


def test_an_everywhere_target_is_judged_on_the_figure_as_printed():
    from dataclasses import replace

    from playhouse_pool.benchmark import report
    from playhouse_pool.benchmark.aio_catalog import ASYNC_SCENARIOS
    from playhouse_pool.benchmark.catalog import Check, Metric
    scenario = replace(
        ASYNC_SCENARIOS[2], metrics=(Metric('worst_ms', 'worst ms', '%.1f'),),
        checks=(Check('worst <= 50 ms', 'worst_ms', 50, True,
                      everywhere=True),))
    run = report.Run(Target.from_url('sqlite:///x.db'), 1, asyncio=True)
    for value, verdict in [(50.004, True), (50.006, False)]:
        outcome = report.Outcome(scenario, scenario.title, results={
            'playhouse_pool': {'worst_ms': value}})
        [row] = report.check_rows(run, outcome)
        assert row[3] is verdict


def test_over_repeated_runs_the_storm_keeps_its_worst_counts():
    from playhouse_pool.benchmark.aio_catalog import ASYNC_SCENARIOS
    storm = {s.id: s for s in ASYNC_SCENARIOS}['A2']
    runs = [{'cancelled': c, 'failed': f, 'lost': 0, 'next_ok': n}
            for c, f, n in [(80, 0, 200), (90, 172, 200), (85, 0, 150)]]
    assert cli._summarise(runs, storm) == {
        'cancelled': 85, 'failed': 172, 'lost': 0, 'next_ok': 150}


@pytest.mark.parametrize('module', ['aiosqlite', 'greenlet'])
def test_asyncio_without_its_driver_is_refused_naming_the_extra(
        capsys, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)
    assert cli.main(['--asyncio']) == 2
    error = capsys.readouterr().err
    assert '--asyncio on sqlite needs %s, not installed' % module in error
    # As --url says it for a missing driver: the bench extra has them all.
    assert "pip install 'playhouse-pool[bench]'" in error
    assert "pip install '.[bench]'" in error


@pytest.mark.parametrize('url, module', [(POSTGRES_URL, 'asyncpg'),
                                         (MYSQL_URL, 'aiomysql')])
def test_asyncio_on_a_server_without_its_driver_is_refused_before_connecting(
        capsys, monkeypatch, url, module):
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(cli, 'check_reachable', pytest.fail)
    assert cli.main(['--asyncio', '--url', url]) == 2
    error = capsys.readouterr().err
    assert 'needs %s, not installed' % module in error
    assert "pip install 'playhouse-pool[bench]'" in error


def test_asyncio_on_postgres_without_psycopg_pool_is_refused_naming_it(
        monkeypatch):
    monkeypatch.setattr(aio_pools, 'psycopg_pool', None)
    with pytest.raises(ImportError) as refused:
        aio_pools.check_drivers(Target.from_url(POSTGRES_URL))
    assert "psycopg_pool's AsyncConnectionPool" in str(refused.value)
    assert "pip install 'playhouse-pool[bench]'" in str(refused.value)


def test_the_bench_extra_installs_every_asyncio_peer():
    import configparser
    import pathlib
    config = configparser.ConfigParser()
    config.read(pathlib.Path(__file__).resolve().parent.parent / 'setup.cfg')
    bench = set(config['options.extras_require']['bench'].split())
    assert {'asyncpg', 'aiomysql', 'aiosqlite', 'greenlet'} <= bench


@pytest.mark.parametrize('args', [['--scenario', 'S1,A1'],
                                  ['--asyncio', '--scenario', 'S2'],
                                  ['--asyncio', '--collector', 'otel']])
def test_thread_and_asyncio_runs_are_not_mixed(capsys, args):
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2
    assert '--asyncio' in capsys.readouterr().err


@pytest.mark.asyncio
async def test_the_lean_asyncio_reference_hands_off_in_order_past_a_waiter_cancelled_as_it_is_served(  # noqa: E501
        tmp_path):
    from playhouse_pool.benchmark.aio_lean import LeanAsyncSqliteDatabase
    db = LeanAsyncSqliteDatabase(str(tmp_path / 'lean.db'),
                                 max_connections=1)
    await db.aconnect()
    first = db._state.conn
    served = []

    async def wait_in_line(index):
        await db.aconnect()
        served.append((index, db._state.conn))
        await db.aclose()

    waiters = [asyncio.ensure_future(wait_in_line(i)) for i in range(3)]
    while len(db._lean_waiters) < 3:
        await asyncio.sleep(0)
    # Handed the connection and cancelled in the same loop iteration:
    # waiter 0 never sees it, and waiter 1 gets it next.
    await db.aclose()
    waiters[0].cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert served == [(1, first), (2, first)]
    assert db.lean_counts() == {'open': 1, 'in_use': 0}
    await db.close_pool()
    assert db.lean_counts() == {'open': 0, 'in_use': 0}
