"""The benchmark (``python -m playhouse_pool``): it runs every scenario
through every pool and reports each one; its proxy counts bytes; its lean
reference hands off in order; ``--baseline`` adds a second copy. Behaviour
only: the figures' targets belong to the benchmark itself."""
import json
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

import playhouse_pool
from conftest import (POSTGRES_URL, Psycopg2Backend, _require, run_threads,
                      wait_until)
from playhouse_pool.benchmark import cli, pools, report, scenarios
from playhouse_pool.benchmark.catalog import SCENARIOS, Check, Metric
from playhouse_pool.benchmark.lean import LeanSqliteDatabase
from playhouse_pool.benchmark.proxy import LatencyProxy
from playhouse_pool.benchmark.target import Target


def run_json(capsys, *args):
    """Run the benchmark with --json: (exit status, the report)."""
    status = cli.main([*args, '--json'])
    return status, json.loads(capsys.readouterr().out)


def by_id(report):
    return {s['id']: s for s in report['scenarios']}


def assert_ran(scenario, pools_expected):
    assert scenario['skipped'] is None
    assert set(scenario['results']) == set(pools_expected)
    for name, figures in scenario['results'].items():
        assert 'error' not in figures, (scenario['id'], name, figures)
    assert scenario['ratios'], scenario['id']


def test_s1_and_s2_run_on_sqlite_through_ours_the_lean_reference_and_peewee(
        capsys):
    status, report = run_json(capsys, '--scenario', 'S1,S2', '--duration',
                              '0.2', '--iterations', '200')
    assert status == 0
    assert report['backend'] == 'sqlite'
    found = by_id(report)
    assert list(found) == ['S1', 'S2']
    for scenario in found.values():
        assert_ran(scenario, ['playhouse_pool', 'lean', 'peewee'])
        # Targets are judged on Postgres only.
        assert scenario['targets']
        assert all(t['pass'] is None for t in scenario['targets'])


@pytest.mark.parametrize('kind', ['prometheus', 'otel', 'both'])
def test_collector_runs_ours_again_in_s1_and_s2_attached_and_collecting(
        capsys, monkeypatch, kind):
    from playhouse_pool.benchmark import collectors
    from playhouse_pool.events import events_of
    seen = []
    real_close = collectors.CollectedAdapter.close

    def close(self):
        # Before the last collection and close: the collecting thread has
        # collected (however short the work was), the pool's events go to
        # the collectors' listener.
        wait_until(lambda: self.collections > 0, what='a collection')
        seen.append((len(self.collects),
                     len(events_of(self.db).listeners)))
        real_close(self)
    switched = []
    real_switch = collectors.CollectedAdapter.switch

    def switch(self, on):
        real_switch(self, on)
        switched.append((on, len(events_of(self.db).listeners)))
    monkeypatch.setattr(collectors.CollectedAdapter, 'close', close)
    monkeypatch.setattr(collectors.CollectedAdapter, 'switch', switch)
    monkeypatch.setattr(collectors, 'COLLECT_EVERY', 0.01)

    status, report = run_json(capsys, '--scenario', 'S1,S2', '--duration',
                              '0.3', '--iterations', '300', '--collector',
                              kind)

    assert status == 0
    assert report['collector'] == kind
    for scenario in by_id(report).values():
        assert_ran(scenario, ['playhouse_pool', 'ours+collector', 'lean',
                              'peewee'])
        checked = {t['target']: t['value'] for t in scenario['targets']}
        [paired] = [value for text, value in checked.items()
                    if text.startswith('with a collector')]
        assert paired == scenario['results']['ours+collector'][
            'paired_ratio'] > 0
    collected_s2 = by_id(report)['S2']['results']['ours+collector']
    assert collected_s2['cpu_us'] > 0 and collected_s2['without_cpu_us'] > 0
    # Measured paired: the collector was taken off (no listener at all) and
    # put back on the same pool.
    assert {on for on, _ in switched} == {False, True}
    assert all((listeners > 0) == on for on, listeners in switched)
    # One collected pool per scenario.
    collectors_per_kind = 2 if kind == 'both' else 1
    assert len(seen) == 2
    for collects, listeners in seen:
        assert collects == collectors_per_kind
        assert listeners >= 1


def test_a_collector_that_is_not_installed_is_refused_naming_the_install(
        capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'opentelemetry.sdk.metrics', None)

    assert cli.main(['--scenario', 'S1', '--collector', 'both']) == 2

    error = capsys.readouterr().err
    assert '--collector both needs opentelemetry.sdk.metrics' in error
    assert 'pip install opentelemetry-sdk' in error


@pytest.mark.parametrize('url, hidden, needs', [
    (POSTGRES_URL, ['psycopg2'], 'needs psycopg2'),
    ('mysql://root@127.0.0.1:3306/test', ['pymysql', 'MySQLdb'],
     'needs pymysql (or mysqlclient)')])
def test_a_server_url_without_its_driver_is_refused_naming_the_install(
        capsys, monkeypatch, url, hidden, needs):
    for module in hidden:
        monkeypatch.setitem(sys.modules, module, None)

    assert cli.main(['--url', url]) == 2

    error = capsys.readouterr().err
    assert needs in error
    assert "pip install 'playhouse-pool[bench]'" in error
    assert "pip install '.[bench]'" in error


@pytest.mark.server
def test_without_psycopg_pool_a_postgres_run_says_what_it_left_out(
        capsys, monkeypatch):
    _require(Psycopg2Backend)
    monkeypatch.setattr(pools, 'psycopg_pool', None)
    monkeypatch.setattr(pools, '_PSYCOPG_POOL_ERROR', 'hidden by the test')
    args = ['--url', POSTGRES_URL, '--scenario', 'S2', '--duration', '0.2']

    status, report_ = run_json(capsys, *args)
    assert status == 0
    assert report_['left_out'] == {'psycopg_pool': (
        "not installed (hidden by the test): pip install "
        "'playhouse-pool[bench]' (in a clone: pip install '.[bench]')")}
    s2 = by_id(report_)['S2']
    assert 'psycopg_pool' not in s2['results']
    against = [t for t in s2['targets'] if 'psycopg_pool' in t['target']]
    assert len(against) == 2
    assert all(t['pass'] is None and t['not_judged'] == 'psycopg_pool not '
               'run' for t in against)

    assert cli.main(args) == 0
    table = capsys.readouterr().out
    assert 'left out: psycopg_pool, not installed' in table
    assert table.count('n/a  psycopg_pool not run') == 2


def test_the_table_says_which_way_each_ratio_is_better(capsys):
    assert cli.main(['--scenario', 'S2', '--duration', '0.2']) == 0
    table = capsys.readouterr().out.splitlines()
    header = next(line for line in table if line.lstrip().startswith('pool'))
    [better] = [line for line in table if 'ours better if' in line]
    # Under each compared column: req/s is better higher, waits lower.
    for label, direction in [('req/s', '> 1x'), ('wait p50', '< 1x'),
                             ('wait max', '< 1x')]:
        end = header.index(label) + len(label)
        assert better[end - len(direction):end] == direction
    assert 'most/fewest' in header and len(better) < header.index(
        'most/fewest')

    status, report_ = run_json(capsys, '--scenario', 'S2', '--duration',
                               '0.2')
    assert by_id(report_)['S2']['better'] == {
        'rps': 'higher', 'wait_p50_ms': 'lower', 'wait_p99_ms': 'lower',
        'wait_max_ms': 'lower'}


def test_on_sqlite_peewees_unfair_hand_back_is_explained_where_printed(
        capsys):
    assert cli.main(['--scenario', 'S2', '--duration', '0.2']) == 0
    s2 = capsys.readouterr().out.split('\nS2  ', 1)[1]
    note = ' '.join(s2[s2.index('note:'):].split())
    assert 'peewee on SQLite: a thread that checks its connection in' in note


@pytest.mark.parametrize('value, shown, verdict', [
    (1.104, '1.10', 'PASS'), (1.1, '1.10', 'PASS'), (1.106, '1.11', 'FAIL')])
def test_a_target_is_judged_on_the_figure_as_printed(value, shown, verdict):
    scenario = replace(
        SCENARIOS[0], metrics=(Metric('ratio', 'x floor', '%.2f'),),
        checks=(Check('x floor <= 1.10 x lean', 'ratio', 1.10, True,
                      'lean'),))
    outcome = report.Outcome(scenario, scenario.title, results={
        'playhouse_pool': {'ratio': value}, 'lean': {'ratio': 1.0}})
    run = report.Run(Target.from_url(POSTGRES_URL), 1)

    [row] = report.check_rows(run, outcome)
    assert row[3] is (verdict == 'PASS')
    [line] = [line for line in report.render(run, [outcome]).splitlines()
              if 'target:' in line]
    assert line.split()[-2:] == [shown, verdict]


def test_the_networked_scenarios_say_why_they_are_skipped_on_sqlite(capsys):
    status, report = run_json(capsys, '--scenario', 'S3,S4,S5,S6,S7')
    assert status == 0
    found = by_id(report)
    assert list(found) == ['S3', 'S4', 'S5', 'S6', 'S7']
    for scenario in found.values():
        assert 'networked database' in scenario['skipped']
        assert scenario['results'] == {}


@pytest.fixture
def short_scenarios(monkeypatch):
    """The scenarios' set-ups, shortened: each still does every step."""
    for name, value in {'CONNECT_DELAY': 0.02, 'S4_HOLD': 0.05,
                        'S4_STAGGER': 0.02, 'S4_LEAD': 0.01,
                        'S4_TAIL': 0.01, 'S5_SECONDS': 0.6,
                        'S5_STALE': 0.2, 'S6_LATER': 0.1,
                        'S7_PING_AFTER': 0.05, 'S7_IDLE': 0.1,
                        'S7_ROUNDS': 2}.items():
        assert hasattr(scenarios, name)
        monkeypatch.setattr(scenarios, name, value)


@pytest.mark.server
def test_every_scenario_runs_on_postgres_with_psycopg_pool_beside_ours(
        capsys, short_scenarios):
    _require(Psycopg2Backend)
    status, report = run_json(capsys, '--url', POSTGRES_URL, '--duration',
                              '0.2', '--iterations', '200')
    assert status == 0
    found = by_id(report)
    assert list(found) == ['S1', 'S2', 'S3', 'S4', 'S5', 'S6', 'S7']
    peers = ['playhouse_pool', 'peewee', 'psycopg_pool']
    for sid, scenario in found.items():
        assert_ran(scenario, peers + (['lean'] if sid in ('S1', 'S2')
                                      else []))
        # On Postgres every target gets a verdict (whichever it is).
        assert scenario['targets']
        assert all(isinstance(t['pass'], bool) for t in scenario['targets'])
    for figures in found['S7']['results'].values():
        assert isinstance(figures['bytes'], int) and figures['bytes'] >= 0


def test_baseline_runs_a_second_copy_of_the_package_as_its_own_row(
        capsys, tmp_path):
    copy = tmp_path / 'old' / 'playhouse_pool'
    shutil.copytree(Path(playhouse_pool.__file__).parent, copy,
                    ignore=shutil.ignore_patterns('__pycache__'))
    try:
        status, report = run_json(capsys, '--scenario', 'S1',
                                  '--iterations', '200',
                                  '--baseline', str(copy.parent))
        baseline = sys.modules[pools._BASELINE_MODULE]
    finally:
        sys.modules.pop(pools._BASELINE_MODULE, None)
    assert status == 0
    assert baseline.PooledSqliteDatabase is not (
        playhouse_pool.PooledSqliteDatabase)
    assert baseline.__file__ == str(copy / '__init__.py')
    assert str(copy) in report['baseline']
    s1 = by_id(report)['S1']
    assert_ran(s1, ['playhouse_pool', 'baseline', 'lean', 'peewee'])
    assert 'playhouse_pool/baseline' in s1['ratios']


def test_a_baseline_that_is_no_package_is_refused_naming_the_path(
        capsys, tmp_path):
    (tmp_path / 'notes').mkdir()
    assert cli.main(['--baseline', str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert 'baseline %s is not a playhouse_pool package' % tmp_path in error


def test_an_unknown_scenario_is_refused_naming_it(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(['--scenario', 'S1,S9'])
    assert exit_.value.code == 2
    assert 'unknown scenario(s): S9' in capsys.readouterr().err


@pytest.mark.parametrize('module', ['playhouse_pool',
                                    'playhouse_pool.benchmark'])
def test_both_entry_points_run_the_benchmark(module):
    done = subprocess.run([sys.executable, '-m', module, '--help'],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '--baseline' in done.stdout and 'S1..S7' in done.stdout


def test_the_proxy_counts_the_bytes_it_forwards_each_way():
    server = socket.create_server(('127.0.0.1', 0))

    def echo_once():
        conn, _ = server.accept()
        with conn:
            conn.sendall(conn.recv(100) * 2)

    echo = threading.Thread(target=echo_once)
    echo.start()
    try:
        with LatencyProxy(*server.getsockname()) as proxy:
            with socket.create_connection(('127.0.0.1', proxy.port)) as c:
                c.sendall(b'hello')
                received = b''
                while len(received) < 10:
                    received += c.recv(100)
                assert received == b'hellohello'
                assert proxy.bytes_to_server == 5
                assert proxy.bytes_to_client == 10
    finally:
        echo.join(10)
        server.close()


def test_the_lean_reference_hands_returned_connections_to_waiters_in_order(
        tmp_path):
    db = LeanSqliteDatabase(str(tmp_path / 'lean.db'), max_connections=1,
                            check_same_thread=False)
    db.connect()
    first = db.connection()
    served = []

    def wait_in_line(index):
        db.connect()
        served.append((index, db.connection()))
        db.close()

    def queue_up(index):
        wait_until(lambda: len(db._waiters) == index,
                   what='waiter %d to queue' % index)
        wait_in_line(index)

    threads = [threading.Thread(target=queue_up, args=(i,))
               for i in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(db._waiters) == 2, what='both waiters')
    db.close()
    for thread in threads:
        thread.join(10)
    assert served == [(0, first), (1, first)]
    assert db._open == 1
    db.close_all()
    assert db._open == 0


def test_the_lean_reference_opens_up_to_max_connections_in_parallel(
        tmp_path):
    db = LeanSqliteDatabase(str(tmp_path / 'lean.db'), max_connections=3,
                            check_same_thread=False)
    all_in = threading.Barrier(3, timeout=10)

    def hold(_):
        db.connect()
        conn = db.connection()
        all_in.wait()
        db.close()
        return conn

    conns = run_threads(3, hold)
    assert len({id(c) for c in conns}) == 3
    assert db._open == 3 and len(db._idle) == 3
    db.close_all()
