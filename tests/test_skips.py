"""What a test run says about what it could not test: skips summed up, one
line per reason, and PLAYHOUSE_POOL_REQUIRE taking only names it knows."""
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_pytest(*args, **env):
    """pytest in a subprocess, from the repository, with ``env`` added and
    PLAYHOUSE_POOL_REQUIRE unset unless given."""
    environ = {k: v for k, v in os.environ.items()
               if k != 'PLAYHOUSE_POOL_REQUIRE'}
    environ.update(env)
    return subprocess.run([sys.executable, '-m', 'pytest', '-p',
                           'no:cacheprovider', *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_skips_are_summed_up_one_line_per_reason():
    done = run_pytest('tests/test_pool.py', '-k', 'mysql or mariadb',
                      PLAYHOUSE_POOL_TEST_MYSQL='mysql://root@127.0.0.1:1/t')

    assert done.returncode == 0, done.stdout + done.stderr
    summary = [line for line in done.stdout.split('skipped, by reason', 1)[1]
               .splitlines()[1:] if re.match(r' *\d+  ', line)]
    unreachable = [line for line in summary
                   if 'mysql server unreachable at mysql://root@127.0.0.1:1/t'
                   ' (PLAYHOUSE_POOL_TEST_MYSQL)' in line]
    # Every pymysql test at least (other drivers may be skipped for not
    # being installed, each driver on a line of its own).
    assert len(unreachable) == 1
    assert int(unreachable[0].split()[0]) >= 10
    assert len(summary) <= 3
    assert 'SKIPPED' not in done.stdout


def test_require_refuses_a_name_no_test_knows():
    done = run_pytest('--collect-only', '-q',
                      PLAYHOUSE_POOL_REQUIRE='postgres,mariadb')

    assert done.returncode == 4          # pytest's usage error
    assert ('PLAYHOUSE_POOL_REQUIRE names mariadb, which no test knows; it '
            'takes cysqlite, mariadbconnector, mysql, mysqlclient, '
            'mysqlconnector, pgbouncer, postgres' in done.stderr)
