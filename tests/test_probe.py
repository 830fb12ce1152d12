"""The readability probe: quiet socket -> False; data or EOF -> True."""
import socket

import pytest

from playhouse_pool import _probe


@pytest.fixture(params=['libc poll, GIL kept', 'select.poll'])
def probe_kind(request, monkeypatch):
    if request.param == 'select.poll':
        monkeypatch.setattr(_probe, '_poll', None)
    elif _probe._poll is None:
        pytest.skip('no C library poll on this platform')
    return request.param


def test_quiet_socket_is_not_readable(probe_kind):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert _probe.probe_for(ours.fileno()).readable() is False


def test_data_from_the_peer_makes_it_readable(probe_kind):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        probe = _probe.probe_for(ours.fileno())
        theirs.sendall(b'E')          # e.g. an error before the server quits
        assert probe.readable() is True


def test_peer_closing_makes_it_readable(probe_kind):
    ours, theirs = socket.socketpair()
    with ours:
        probe = _probe.probe_for(ours.fileno())
        theirs.close()                # EOF
        assert probe.readable() is True


def test_no_socket_no_probe():
    assert _probe.probe_for(None) is None
