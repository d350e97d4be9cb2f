"""logs: a service's aggregated logs, read through a manager (`docker service logs`), each line with
its time and the task and node it came from, the cluster's secret values masked. Read-only.

Bounded by default: the newest `tail` lines of each task (the running ones and the recent history
Swarm keeps per slot), read task by task, then the newest `tail` of them all in one time line;
`--follow` streams for a fixed window (`timeout` on the manager), never for ever.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cluster.credentials import load_existing
from cluster.durations import parse_duration
from cluster.errors import ConfigError, OptionErrors, SwarmlabError, redact
from cluster.facts import read
from cluster.facts.listings import SERVICE_NAMES
from cluster.facts.logs import TASK_READ_LIMIT, TIMED_OUT, LogLine, parse_log_line, service_follow_command, task_logs
from cluster.facts.services import Task
from cluster.facts.tasks import service_tasks
from cluster.reads import find_leader
from cluster.session import Session

DEFAULT_TAIL = 200
MAX_TAIL = 10_000
DEFAULT_FOLLOW = "60s"
MAX_FOLLOW = 3_600
# The SSH command outlives the manager's own `timeout` by this much before we give up on it.
FOLLOW_GRACE = 15
# --grep searches this many of each task's newest lines (with --since: every line since then).
GREP_WINDOW = 2000


@dataclass(frozen=True)
class LogQuery:
    """What `fab logs` asks for, checked: nothing runs until every option is valid."""

    service: str
    tail: int = DEFAULT_TAIL
    since_seconds: int | None = None
    follow_seconds: int | None = None
    grep: re.Pattern[str] | None = None
    slot: str | None = None  # --task N: only the task in that slot (and its earlier incarnations)


def log_query(
    service: str,
    *,
    tail: int = DEFAULT_TAIL,
    since: str = "",
    follow: bool = False,
    follow_for: str = DEFAULT_FOLLOW,
    grep: str = "",
    task: int = 0,
) -> LogQuery:
    """Every option checked at once, each problem naming its flag, before anything is run."""
    problems: list[ConfigError] = []
    since_seconds = follow_seconds = None
    pattern = None
    if not service.strip():
        problems.append(ConfigError("SERVICE", service, "is empty", "name a service (see `fab status`)"))
    if not 1 <= tail <= MAX_TAIL:
        problems.append(ConfigError("--tail", tail, f"must be between 1 and {MAX_TAIL}", "give a line count"))
    if task < 0:
        problems.append(ConfigError("--task", task, "must be a task slot (1, 2, ...)", "see `fab status --map`"))
    try:
        since_seconds = parse_duration(since, "--since") if since else None
    except ConfigError as error:
        problems.append(error)
    try:
        follow_seconds = parse_duration(follow_for, "--follow-for") if follow else None
        if follow_seconds is not None and follow_seconds > MAX_FOLLOW:
            problems.append(ConfigError("--follow-for", follow_for, "is longer than 1h", "follow for at most 1h"))
    except ConfigError as error:
        problems.append(error)
    try:
        pattern = re.compile(grep) if grep else None
    except re.error as error:
        problems.append(ConfigError("--grep", grep, f"is not a valid regular expression ({error})", "fix the pattern"))
    if problems:
        raise OptionErrors(problems)
    return LogQuery(service.strip(), tail, since_seconds, follow_seconds, pattern, str(task) if task else None)


def resolve_service(wanted: str, services: Sequence[str]) -> str:
    """A full name (`registration_api`), or a stack's service by its short name (`api`) when only one
    stack has it; otherwise an error listing the services there are."""
    if wanted in services:
        return wanted
    matches = [s for s in services if s.partition("_")[2] == wanted]
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(services) or "none"
    if matches:
        raise SwarmlabError(f"service {wanted!r} is ambiguous: {', '.join(matches)}; give the full name")
    raise SwarmlabError(f"no service {wanted!r} on the swarm; services: {listed}")


def time_key(time: str) -> str:
    """A key that sorts Docker's times: RFC 3339 "nano" drops trailing zeros, so pad the fraction."""
    whole, _, fraction = time.rstrip("Z").partition(".")
    return f"{whole}.{fraction:0<9}"


def short_time(time: str) -> str:
    """Docker's nanoseconds cut to milliseconds: `2026-11-25T16:12:53.340Z`."""
    return time_key(time)[:-6] + "Z"


def format_log_line(line: LogLine, secrets: Sequence[str], stack: str = "") -> str:
    """`time  service.slot.task@node  message`, the stack's prefix dropped and every secret masked."""
    message = redact(line.message, tuple(secrets))
    if not line.framed:
        return message
    service = line.service.removeprefix(f"{stack}_") if stack else line.service
    task = f"{service}.{line.slot}.{line.task_id[:6]}@{line.node}" if line.slot else f"{service}@{line.node}"
    return f"{short_time(line.time)}  {task}  {message}"


def selected(line: LogLine, query: LogQuery, secrets: Sequence[str]) -> bool:
    """--task and --grep; the pattern sees the masked text, so it cannot probe for a secret."""
    if query.slot is not None and line.framed and line.slot != query.slot:
        return False
    return query.grep is None or bool(query.grep.search(redact(line.message, tuple(secrets))))


def cluster_secrets(session: Session) -> tuple[str, ...]:
    """The cluster's generated credentials (the state directory's), longest first so that one
    value inside another is masked whole."""
    values = load_existing(session.state.credentials).values()
    return tuple(sorted((v for v in values if v), key=len, reverse=True))


def engine_tail(query: LogQuery) -> int | None:
    """How many lines to ask of each task: --tail, or more when --grep must search (None: every line
    since --since)."""
    if query.grep is None:
        return query.tail
    return None if query.since_seconds is not None else max(query.tail, GREP_WINDOW)


def chosen_tasks(service: str, tasks: Sequence[Task], slot: str | None) -> list[Task]:
    if slot is None:
        return list(tasks)
    found = [t for t in tasks if t.slot_name == slot]
    if not found:
        slots = ", ".join(sorted({t.slot_name for t in tasks}, key=lambda x: (len(x), x))) or "none"
        raise SwarmlabError(f"{service} has no task in slot {slot}; its slots: {slots}")
    return found


def service_logs(session: Session, query: LogQuery, out: Callable[[str], None]) -> int:
    """Print the service's log lines through `out`; returns how many were printed."""
    runner = session.runner
    leader = find_leader(runner)
    service = resolve_service(query.service, read(runner, leader, SERVICE_NAMES))
    stack = service.partition("_")[0] if "_" in service else ""
    secrets = cluster_secrets(session)
    tasks = chosen_tasks(service, read(runner, leader, service_tasks(service), secrets=secrets), query.slot)
    printed = 0
    if query.follow_seconds is not None:

        def each(text: str) -> None:
            nonlocal printed
            line = parse_log_line(text)
            if text.strip() and selected(line, query, secrets):
                out(format_log_line(line, secrets, stack))
                printed += 1

        command = service_follow_command(service, query.tail, query.since_seconds, query.follow_seconds)
        runner.stream(leader, command, each, timeout=query.follow_seconds + FOLLOW_GRACE, secrets=secrets)
        return printed
    if not tasks:
        return 0
    logs = task_logs([t.task_id for t in tasks], engine_tail(query), query.since_seconds)
    found = read(runner, leader, logs, timeout=TASK_READ_LIMIT * len(tasks) + 30, secrets=secrets)
    # One time line across the tasks (Docker prints task after task); unframed lines (errors) go last.
    ordered = sorted(
        (line for line in found.lines if selected(line, query, secrets)), key=lambda x: (not x.framed, time_key(x.time))
    )
    for line in ordered[-query.tail :]:
        out(format_log_line(line, secrets, stack))
    names = {t.task_id: f"{t.name.removeprefix(stack + '_')} on {t.node}" for t in tasks}
    for task_id, status in found.failed.items():
        why = f"not complete after {TASK_READ_LIMIT}s (moby/moby#38640)" if status == TIMED_OUT else f"exit {status}"
        out(f"# {names.get(task_id, task_id)} ({task_id[:6]}): its log read failed, {why}; lines may be missing")
    return len(ordered[-query.tail :])
