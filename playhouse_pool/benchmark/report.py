"""What the benchmark prints: the progress line, the table, the JSON."""
from __future__ import annotations

import importlib
import json
import math
import os
import platform
import textwrap
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

import peewee

from .. import __version__
from .._redact import redact
from .collectors import COLLECT_EVERY, COLLECTED_NOTE, COLLECTOR_NAMES
from .pools import COLLECTED, OURS, PEEWEE, PSYCOPG, psycopg_pool
from .catalog import Check, Figures, Metric, Scenario
from .target import Target


@dataclass
class Outcome:
    """One scenario's results: figures per pool (medians over repeats), or
    why it was skipped."""
    scenario: Scenario[Any]
    title: str
    skipped: Optional[str] = None
    results: Dict[str, Figures] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """Everything the report says about the run besides the outcomes."""
    target: Target
    repeat: int
    baseline: Optional[str] = None      # where the baseline copy came from
    collector: Optional[str] = None     # --collector's kind
    # Pools that would run on this target but could not, and why.
    left_out: Dict[str, str] = field(default_factory=dict)
    asyncio: bool = False               # --asyncio: A1-A3


class Progress:
    """Progress on stderr: one line rewritten in place on a terminal, plain
    lines otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()

    def start(self, text: str) -> None:
        if self.live:
            self.update(text)
        else:
            self._line(text)

    def update(self, text: str) -> None:
        if self.live:
            self.stream.write('\r\x1b[K' + text)
            self.stream.flush()

    def done(self, text: str) -> None:
        self._line(('\r\x1b[K' if self.live else '') + text)

    def _line(self, text: str) -> None:
        self.stream.write(text + '\n')
        self.stream.flush()


def summary(scenario: Scenario[Any], figures: Figures) -> str:
    """One pool's figures on one line (the progress display's)."""
    if 'error' in figures:
        return 'ERROR ' + figures['error']
    if 'pending' in figures:
        return 'n/a (%s)' % figures['pending']
    # A figure the backend has none of (A2's kill on SQLite) is left out.
    return ', '.join('%s %s' % (m.label, m.fmt % figures[m.key])
                     for m in scenario.metrics if m.key in figures)


# -- The table ----------------------------------------------------------------

def render(run: Run, outcomes: List[Outcome]) -> str:
    lines = ['playhouse_pool %s benchmark: %s (%s)' % (
        __version__, redact(run.target.url), run.target.kind),
        '%s; %s' % (_environment_line(run), 'median of %d runs' % run.repeat
                    if run.repeat > 1 else '1 run')]
    if run.baseline:
        lines.append('baseline: ' + run.baseline)
    if run.collector:
        lines.append('ours+collector: ours with %s attached, collecting '
                     'every %g s' % (COLLECTOR_NAMES[run.collector],
                                     COLLECT_EVERY))
    for name, why in run.left_out.items():
        lines.append(textwrap.fill(
            'left out: %s, %s; its rows and the targets against it are '
            'missing.' % (name, why), 79, subsequent_indent='    '))
    for outcome in outcomes:
        lines.append('')
        lines.extend(_render_outcome(run, outcome))
    return '\n'.join(lines) + '\n'


def _environment_line(run: Run) -> str:
    return ', '.join('%s %s' % (k, v) for k, v in _environment(run).items())


# The asyncio drivers whose versions a --asyncio run reports.
_ASYNC_DRIVERS = ('asyncpg', 'aiomysql', 'aiosqlite', 'greenlet')


def _environment(run: Run) -> Dict[str, Any]:
    env: Dict[str, Any] = {'python': platform.python_version(),
                           'peewee': peewee.__version__,  # type: ignore[attr-defined]
                           'cpus': os.cpu_count()}
    if psycopg_pool is not None:
        env['psycopg_pool'] = psycopg_pool.__version__
    if run.asyncio:
        for name in _ASYNC_DRIVERS:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            env[name] = getattr(module, '__version__', '?')
    return env


_BETTER = 'ours better if'      # the row saying which way each ratio is good


def _render_outcome(run: Run, outcome: Outcome) -> List[str]:
    scenario = outcome.scenario
    lines = ['%s  %s' % (scenario.id, outcome.title)]
    if outcome.skipped:
        return lines + ['    skipped: ' + outcome.skipped]
    rows = [(name, figures, False)
            for name, figures in outcome.results.items()]
    ratios = ratios_of(outcome)
    rows += [('ours / %s' % name, figures, True)
             for name, figures in ratios.items()]
    name_width = max([len(name) for name, _, _ in rows]
                     + [len(_BETTER) if ratios else 0])
    widths = [max(len(m.label), 8) for m in scenario.metrics]
    lines.append('    %-*s' % (name_width, 'pool') + ''.join(
        '  %*s' % (w, m.label) for m, w in zip(scenario.metrics, widths)))
    for name, figures, ratio in rows:
        lines.append('    %-*s' % (name_width, name)
                     + _cells(scenario.metrics, widths, figures, ratio))
    if ratios:
        lines.append(('    %-*s' % (name_width, _BETTER) + ''.join(
            '  %*s' % (w, ('> 1x' if m.higher_is_better else '< 1x')
                       if m.compare else '')
            for m, w in zip(scenario.metrics, widths))).rstrip())
    lines.extend(_render_checks(run, outcome))
    note = scenario.note
    if PSYCOPG in outcome.results and scenario.psycopg_note:
        note = (note + ' ' + scenario.psycopg_note).strip()
    if (run.target.kind == 'sqlite' and PEEWEE in outcome.results
            and scenario.sqlite_note):
        note = (note + ' ' + scenario.sqlite_note).strip()
    if COLLECTED in outcome.results:
        note = (note + ' ' + COLLECTED_NOTE).strip()
    if note:
        lines.append(textwrap.fill(note, 79, initial_indent='    note: ',
                                   subsequent_indent=' ' * 10))
    return lines


def _cells(metrics: Sequence[Metric], widths: List[int], figures: Figures,
           ratio: bool) -> str:
    if 'error' in figures:
        return '  ERROR ' + figures['error']
    if 'pending' in figures:
        return '  n/a (%s)' % figures['pending']
    cells = []
    for metric, width in zip(metrics, widths):
        value = figures.get(metric.key)
        text = '' if value is None else (
            _times(value) if ratio else metric.fmt % value)
        cells.append('  %*s' % (width, text))
    return ''.join(cells).rstrip()


def _times(ratio: float) -> str:
    # Two decimals, or two significant digits below 0.1: 0.0017x, not 0.00x.
    return ('%.2fx' if ratio == 0 or abs(ratio) >= 0.1 else '%.2gx') % ratio


def better(scenario: Scenario[Any]) -> Dict[str, str]:
    """Per compared metric, whether a higher or a lower figure is better
    (so ours / theirs above or below 1)."""
    return {m.key: 'higher' if m.higher_is_better else 'lower'
            for m in scenario.metrics if m.compare}


def ratios_of(outcome: Outcome) -> Dict[str, Figures]:
    """Ours / each other pool, per comparable metric (none for a scenario
    that compares none: A2's counts are judged by its targets alone)."""
    ours = outcome.results.get(OURS, {})
    if ('error' in ours or 'pending' in ours
            or not any(m.compare for m in outcome.scenario.metrics)):
        return {}
    ratios: Dict[str, Figures] = {}
    for name, theirs in outcome.results.items():
        # The collected row is judged against ours paired, by its target:
        # its blocks are not the other rows' (collectors.py).
        if name in (OURS, COLLECTED) or 'error' in theirs or (
                'pending' in theirs):
            continue
        ratios[name] = {m.key: _ratio(ours[m.key], theirs[m.key])
                        for m in outcome.scenario.metrics if m.compare}
    return ratios


def _ratio(ours: float, theirs: float) -> Optional[float]:
    return ours / theirs if theirs and math.isfinite(theirs) else None


# (check, value, limit, passed, why not judged). passed is None off
# Postgres (unless the check is judged everywhere), without a value (an
# error; ours not built yet: then "why not judged" says so) or when the
# pool it compares with was left out (then "why not judged" names it).
CheckRow = Tuple[Check, Optional[float], float, Optional[bool], str]


def check_rows(run: Run, outcome: Outcome) -> List[CheckRow]:
    """The targets of ``outcome``'s scenario, judged (off Postgres, only
    those judged ``everywhere``). A figure is judged as the table prints it
    (``_short``): 1.104 shows as 1.10, and passes "<= 1.10". Checks of a
    row that did not run are left out, but for a pool the run left out
    (``Run.left_out``), whose checks say so; a check of a row that cannot
    run yet (ours not built: ``pending_reason``) has no value, and says
    why."""
    rows: List[CheckRow] = []
    if outcome.skipped:
        return rows
    for check in outcome.scenario.checks:
        if check.versus in run.left_out:
            rows.append((check, None, check.limit, None,
                         '%s not run' % check.versus))
            continue
        evaluated = check.evaluate(outcome.results)
        if evaluated is None:
            continue
        value, limit = evaluated
        judged = run.target.kind == 'postgres' or check.everywhere
        verdict = (check.passed(_as_shown(value), _as_shown(limit))
                   if value is not None and judged else None)
        rows.append((check, value, limit, verdict,
                     pending_reason(outcome, check) or ''))
    return rows


def pending_reason(outcome: Outcome, check: Check) -> Optional[str]:
    """Why ``check`` has no value: the row it judges cannot run yet."""
    return outcome.results.get(check.subject, {}).get('pending')


def _render_checks(run: Run, outcome: Outcome) -> List[str]:
    rows = check_rows(run, outcome)
    width = max((len(row[0].text) for row in rows), default=0)
    lines = []
    for check, value, limit, verdict, why in rows:
        pending = pending_reason(outcome, check)
        if pending is not None:
            lines.append('    target: %-*s  n/a (%s)' % (width, check.text,
                                                         pending))
            continue
        shown = 'n/a' if value is None else _short(value)
        if check.floor is not None and not why:
            shown += ' (limit %s)' % _short(limit)
        if why:
            mark = why
        elif verdict is not None:
            mark = 'PASS' if verdict else 'FAIL'
        else:
            mark = '(postgres target)' if value is not None else ''
        lines.append(('    target: %-*s  %8s  %s' % (width, check.text,
                                                     shown, mark)).rstrip())
    return lines


def _short(value: float) -> str:
    if isinstance(value, int):          # a count
        return '%d' % value
    return '%.0f' % value if abs(value) >= 100 else '%.2f' % value


def _as_shown(value: float) -> float:
    """``value`` as the report prints it, for the verdict to agree with
    the figures on the page."""
    return float(_short(value))


# -- JSON ---------------------------------------------------------------------

def to_json(run: Run, outcomes: List[Outcome]) -> str:
    scenarios = []
    for outcome in outcomes:
        scenarios.append({
            'id': outcome.scenario.id,
            'title': outcome.title,
            'skipped': outcome.skipped,
            'results': outcome.results,
            'ratios': {'%s/%s' % (OURS, name): ratios
                       for name, ratios in ratios_of(outcome).items()},
            'better': better(outcome.scenario),
            'targets': [{'target': check.text, 'value': value,
                         'limit': limit, 'pass': verdict,
                         'not_judged': why or None,
                         'pending': pending_reason(outcome, check)}
                        for check, value, limit, verdict, why
                        in check_rows(run, outcome)],
        })
    report = {'benchmark': 'playhouse_pool', 'version': __version__,
              'url': redact(run.target.url), 'backend': run.target.kind,
              'repeat': run.repeat, 'baseline': run.baseline,
              'collector': run.collector, 'left_out': run.left_out,
              'asyncio': run.asyncio, 'environment': _environment(run),
              'scenarios': scenarios}
    return json.dumps(_finite(report), indent=2)


def _finite(value: Any) -> Any:
    """JSON has no inf or nan: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
