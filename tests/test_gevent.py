"""gevent: greenlets share the pool (pymysql, monkey-patched)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import MYSQL_URL, REQUIRED, MySQLBackend

SCRIPT = os.path.join(os.path.dirname(__file__), 'scripts',
                      'gevent_workload.py')


@pytest.mark.parametrize('server_backend', [MySQLBackend], indirect=True)
def test_200_greenlets_share_10_connections(server_backend):
    if importlib.util.find_spec('gevent') is None:
        message = 'gevent is not installed (pip install -e ".[test]")'
        if 'mysql' in REQUIRED:       # required: no passing by skipping
            pytest.fail(message)
        pytest.skip(message)
    url = MYSQL_URL.replace('mysql://', 'mysql+pool://', 1)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, SCRIPT, url], env=env, timeout=120,
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert result['errors'] == []
    assert result['done'] == 210
    first = result['after_requests']
    assert (first['open'], first['in_use'], first['created']) == (10, 0, 10)
    assert first['reclaimed'] == 0          # no live greenlet robbed
    final = result['final']
    assert final['reclaimed'] == 10         # ended without close()
    assert final['in_use'] == 0 and final['open'] <= 10
