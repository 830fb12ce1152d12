"""Kill a pooled connection's server side without waiting, check it out at
once, run one statement: how often does the user see an error?

    python tests/scripts/kill_loop.py [--trials 200] [--driver psycopg2 ...]

Prints, per driver: trials, user-visible errors, statements the pool ran
again on another connection (pool_stats()['recovered']), and rows the
autocommit INSERTs left (one per trial when nothing ran twice). Uses the
test servers (PLAYHOUSE_POOL_TEST_POSTGRES / _MYSQL) and kills only the
connections it opened.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from conftest import (MySQLBackend, Psycopg2Backend,  # noqa: E402
                      Psycopg3Backend)

BACKENDS = {'psycopg2': Psycopg2Backend, 'psycopg3': Psycopg3Backend,
            'pymysql': MySQLBackend}


def run(name: str, trials: int, tmp: str) -> dict:
    backend = BACKENDS[name](tmp)
    try:
        db = backend.make_db(max_connections=2, timeout=10)
        table = backend.tag + '_kill'
        with db.connection_context():
            db.execute_sql('CREATE TABLE %s (trial INTEGER)' % table)
            victim = backend.conn_id(db)
        errors = []
        for trial in range(trials):
            backend.kill_now(victim)        # returns before the server acts
            try:
                with db.connection_context():
                    db.execute_sql('INSERT INTO %s (trial) VALUES (%d)'
                                   % (table, trial))
                    victim = backend.conn_id(db)
            except Exception as exc:        # what the user would see
                errors.append(exc)
                with db.connection_context():
                    victim = backend.conn_id(db)
        where = (table if backend.server == 'postgres'
                 else '%s.%s' % (backend.tag, table))  # its own database
        rows = backend.admin_query('SELECT COUNT(*), COUNT(DISTINCT trial) '
                                   'FROM %s' % where)[0]
        if backend.server == 'postgres':
            backend.admin_query('DROP TABLE %s' % table)
        stats = db.pool_stats()
        return {'driver': name, 'trials': trials, 'errors': len(errors),
                'recovered': stats['recovered'], 'rows': rows[0],
                'distinct': rows[1],
                'first_error': repr(errors[0]) if errors else None}
    finally:
        backend.close()


def main() -> None:
    import tempfile
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--trials', type=int, default=200)
    parser.add_argument('--driver', action='append', choices=list(BACKENDS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.driver or list(BACKENDS):
            result = run(name, args.trials, tmp)
            print('{driver:9} trials {trials}  user-visible errors {errors}'
                  '  recovered {recovered}  rows {rows} (distinct trials '
                  '{distinct})'.format(**result))
            if result['first_error']:
                print('    first error:', result['first_error'])


if __name__ == '__main__':
    main()
