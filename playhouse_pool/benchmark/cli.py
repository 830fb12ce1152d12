"""The command line: ``python -m playhouse_pool`` (or ``python -m
playhouse_pool.benchmark``) runs the chosen scenarios through every pool
and prints the table, or JSON with ``--json``."""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from types import ModuleType
from typing import Callable, Dict, List, Optional, Sequence

from .crew import describe
from .collectors import (COLLECTORS, PAIRED_RUNS, check_available,
                         with_collector)
from .pools import (COLLECTED, HOT_PATH_ONLY, PoolSpec, left_out,
                    load_baseline, pool_specs)
from .report import Outcome, Progress, Run, render, summary, to_json
from .catalog import SCENARIOS, Context, Figures, Scenario
from .target import Target, check_driver, check_reachable

_EPILOG = '''\
A/B: --baseline runs a second copy of playhouse_pool beside this one, as
the row "baseline", with "ours / baseline" ratios in every scenario. Give
the directory of that copy's package; its imports are relative, so it
needs no renaming. For an older commit:

  mkdir /tmp/ab && git archive REV playhouse_pool | tar -x -C /tmp/ab
  python -m playhouse_pool --url ... --baseline /tmp/ab/playhouse_pool

--collector runs our pool a second time in S1 and S2 with a metrics
collector attached and collecting every 0.25 s (the row "ours+collector"),
with a target for what it may cost.

Ratios are ours / theirs: the row "ours better if" says, per column,
whether below or above 1x is better for ours.

Targets are set for Postgres: PASS/FAIL is printed for a Postgres URL only,
and judges the figures as printed (to the digits shown).
S3-S7 connect through a loopback proxy, so they need a networked database.

Exit status: 0 when every scenario ran, whatever its targets (a FAIL is a
finding, not an error); 1 if a scenario failed with an error; 2 for bad
input (a wrong URL, a missing driver or collector package).
'''


def run_scenario(ctx: Context, scenario: Scenario, specs: List[PoolSpec],
                 repeat: int, progress: Progress) -> Outcome:
    """Run one scenario ``repeat`` times through each pool (the lean
    reference only where the scenario has it); keep the medians."""
    outcome = Outcome(scenario, scenario.title.format(duration=ctx.duration))
    if scenario.networked and not ctx.target.networked:
        outcome.skipped = ('needs a networked database (it connects through '
                           'a loopback proxy); use --url')
        progress.done('%s skipped: %s' % (scenario.id, outcome.skipped))
        return outcome
    specs = [s for s in specs
             if scenario.with_lean or s.name not in HOT_PATH_ONLY]
    runs: Dict[str, List[Figures]] = {spec.name: [] for spec in specs}
    for attempt in range(repeat):
        for spec in specs:
            label = '%s %-14s %s' % (scenario.id, spec.name,
                                     '(%d/%d) ' % (attempt + 1, repeat)
                                     if repeat > 1 else '')
            progress.start(label + 'running')
            live = replace(ctx, progress=functools.partial(
                _prefixed, progress.update, label))
            figures = _attempt(scenario, live, spec)
            runs[spec.name].append(figures)
            progress.done(label + summary(scenario, figures))
    outcome.results = {name: _median(figures)
                       for name, figures in runs.items()}
    return outcome


def _prefixed(show: Callable[[str], None], label: str, text: str) -> None:
    show(label + text)


def _attempt(scenario: Scenario, ctx: Context, spec: PoolSpec) -> Figures:
    run = PAIRED_RUNS[scenario.id] if spec.name == COLLECTED else scenario.run
    try:
        return run(ctx, spec)
    except Exception as exc:
        return {'error': describe(exc)}


def _median(runs: List[Figures]) -> Figures:
    errors = [run['error'] for run in runs if 'error' in run]
    if errors:
        return {'error': errors[0]}
    return {key: statistics.median(run[key] for run in runs)
            for key in runs[0]}


# -- Arguments ----------------------------------------------------------------

def _scenario_ids(values: List[str]) -> List[Scenario]:
    wanted = {v.strip().upper() for value in values for v in value.split(',')
              if v.strip()}
    known = {s.id for s in SCENARIOS}
    unknown = wanted - known
    if unknown:
        raise argparse.ArgumentTypeError(
            'unknown scenario(s): %s (choose from %s)'
            % (', '.join(sorted(unknown)), ', '.join(sorted(known))))
    return [s for s in SCENARIOS if not wanted or s.id in wanted]


def _description() -> str:
    scenarios = '\n'.join('  %s  %s' % (s.id, s.title.format(duration=3))
                          for s in SCENARIOS)
    return ('Benchmark playhouse_pool against a lean reference pool (the '
            'least a pool on\npeewee can cost), peewee\'s own pool and, for '
            'Postgres URLs, psycopg_pool.\n\n' + scenarios)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m playhouse_pool',
        description=_description(),
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--url', help='database URL, e.g. postgresql://'
                        'postgres@127.0.0.1:5432/test or mysql://root@'
                        '127.0.0.1:3306/test (default: a SQLite file in a '
                        'temporary directory)')
    parser.add_argument('--json', action='store_true',
                        help='print only JSON on stdout')
    parser.add_argument('--scenario', action='append', default=[],
                        metavar='S1..S7',
                        help='run only these (repeatable or comma-separated)')
    parser.add_argument('--duration', type=_positive, default=3.0,
                        help='seconds S2 runs (default 3)')
    parser.add_argument('--iterations', type=_positive_int, default=5000,
                        help='S1 operations per pool, at most (default 5000)')
    parser.add_argument('--repeat', type=_positive_int, default=1,
                        help='run each scenario N times, report medians')
    parser.add_argument('--baseline', metavar='DIR',
                        help='also run the copy of playhouse_pool in DIR (its '
                             'package directory) as "baseline" (see below)')
    parser.add_argument('--collector', choices=COLLECTORS,
                        help='also run ours with this metrics collector '
                             'attached and collecting every 0.25 s, as the '
                             'row "ours+collector" of S1 and S2')
    args = parser.parse_args(argv)
    try:
        args.scenarios = _scenario_ids(args.scenario)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    return args


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError('must be > 0')
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError('must be >= 1')
    return value


# -- Main ---------------------------------------------------------------------

def _describe_baseline(baseline: Optional[ModuleType]) -> Optional[str]:
    if baseline is None:
        return None
    return '%s (version %s)' % (os.path.dirname(baseline.__file__ or ''),
                                getattr(baseline, '__version__', '?'))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; the exit status (see ``--help``)."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='playhouse_pool-bench-') as tmp:
        url = args.url or 'sqlite:///%s' % os.path.join(tmp, 'bench.db')
        baseline: Optional[ModuleType] = None
        try:
            target = Target.from_url(url)
            check_driver(target)
            check_reachable(target)
            if args.baseline:
                baseline = load_baseline(args.baseline)
            if args.collector:
                check_available(args.collector)
        except Exception as exc:
            print('error: %s' % describe(exc), file=sys.stderr)
            return 2
        run = Run(target, args.repeat, _describe_baseline(baseline),
                  args.collector, left_out(target))
        progress = Progress(sys.stderr)
        ctx = Context(target, args.iterations, args.duration,
                      progress.update)
        specs = pool_specs(target, baseline)
        if args.collector:
            specs.insert(1, PoolSpec(COLLECTED, with_collector(
                specs[0].build, args.collector)))
        try:
            outcomes = [run_scenario(ctx, scenario, specs, args.repeat,
                                     progress)
                        for scenario in args.scenarios]
        except KeyboardInterrupt:
            print('\ninterrupted', file=sys.stderr)
            return 130
    if args.json:
        print(to_json(run, outcomes))
    else:
        print(render(run, outcomes), end='')
    failed = any('error' in figures for outcome in outcomes
                 for figures in outcome.results.values())
    return 1 if failed else 0
