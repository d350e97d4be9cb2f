"""A service's logs (task by task, or followed for a window) and the swarm's events."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from cluster.facts import Fact

# A plain read goes task by task, each bounded by `timeout`: a whole service's log stream can stop
# without ending (moby/moby#38640, swarmkit#1956; seen here right after a rolling update), and then
# only that task's lines are missing, said so by a marker line. `timeout` also ends a --follow (exit
# status 124: "followed for the whole window"); a follow stays one service-wide stream so that it sees
# the tasks a rolling update starts.
TIMED_OUT = 124
TASK_READ_LIMIT = 20
READ_FAILED = "#swarmlab-logs-failed"


@dataclass(frozen=True)
class LogLine:
    """One line of `docker service logs --timestamps --no-trunc`; a line Docker did not frame (an error
    of the log stream itself) keeps only its text."""

    time: str  # RFC 3339 with nanoseconds, as Docker prints it; "" when unframed
    service: str
    slot: str  # the replica's slot, or the node id of a global service's task
    task_id: str
    node: str
    message: str

    @property
    def framed(self) -> bool:
        return bool(self.time)


# "2026-11-25T16:12:53.340314088Z registration_api.1.ax6x...@worker-2    | message"
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\S+) ([^\s|]+@[^\s|]+)\s*\| ?(.*)$")


def parse_log_line(line: str) -> LogLine:
    found = _LOG_LINE.match(line.rstrip("\r\n"))
    if not found:
        return LogLine("", "", "", "", "", line.rstrip("\r\n"))
    time, context, message = found.groups()
    task, _, node = context.rpartition("@")
    parts = task.rsplit(".", 2)  # service names may hold dots; slot and task id never do
    service, slot, task_id = parts if len(parts) == 3 else (task, "", "")
    return LogLine(time, service, slot, task_id, node, message)


def parse_service_logs(output: str) -> tuple[LogLine, ...]:
    return tuple(parse_log_line(line) for line in output.splitlines() if line.strip())


def parse_read_failures(output: str) -> dict[str, int]:
    """The tasks whose read failed, with the exit status (124: cut by `timeout`)."""
    failed = {}
    for line in output.splitlines():
        if line.startswith(READ_FAILED + " "):
            _, task, status = line.split()
            failed[task] = int(status)
    return failed


@dataclass(frozen=True)
class TaskLogs:
    """What a task-by-task read printed: the log lines, and the tasks whose read failed."""

    lines: tuple[LogLine, ...]
    failed: dict[str, int]


def parse_task_logs(output: str) -> TaskLogs:
    lines = (line for line in output.splitlines() if line.strip() and not line.startswith(READ_FAILED))
    return TaskLogs(tuple(parse_log_line(line) for line in lines), parse_read_failures(output))


def task_logs(task_ids: Sequence[str], tail: int | None, since_seconds: int | None) -> Fact[TaskLogs]:
    """Each task's logs in turn (`tail` None: all of them), a marker line for a task whose read failed."""
    options = f"--timestamps --no-trunc --tail {'all' if tail is None else tail}"
    if since_seconds is not None:
        options += f" --since {since_seconds}s"
    return Fact(
        f"for t in {' '.join(shlex.quote(t) for t in task_ids)}; do "
        f"timeout {TASK_READ_LIMIT} docker service logs {options} $t 2>&1; "
        f'status=$?; [ $status -eq 0 ] || echo "{READ_FAILED} $t $status"; done',
        parse_task_logs,
    )


def service_follow_command(service: str, tail: int, since_seconds: int | None, follow_seconds: int) -> str:
    """A service's log stream for `follow_seconds` (streamed line by line: each goes to parse_log_line)."""
    options = f"--timestamps --no-trunc --tail {tail}"
    if since_seconds is not None:
        options += f" --since {since_seconds}s"
    return (
        f"timeout {follow_seconds} docker service logs --follow {options} {shlex.quote(service)} 2>&1; "
        f"status=$?; [ $status -eq {TIMED_OUT} ] && exit 0; exit $status"
    )


# --- the swarm's events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SwarmEvent:
    time_ns: int
    type: str  # service | node | secret | config | network
    action: str  # create | update | remove
    name: str
    attributes: tuple[tuple[str, str], ...]  # the others (state.old/new, availability.old/new...), sorted


def parse_events(output: str) -> tuple[SwarmEvent, ...]:
    events = []
    for line in output.splitlines():
        if not line.strip().startswith("{"):
            continue
        row = json.loads(line)
        actor = row.get("Actor") or {}
        attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
        name = attributes.pop("name", "") or str(actor.get("ID", ""))[:12]
        time_ns = int(row.get("timeNano") or int(row.get("time", 0)) * 1_000_000_000)
        events.append(
            SwarmEvent(
                time_ns, str(row.get("Type", "")), str(row.get("Action", "")), name, tuple(sorted(attributes.items()))
            )
        )
    return tuple(events)


def events_since(since_seconds: int, types: Sequence[str]) -> Fact[tuple[SwarmEvent, ...]]:
    """The swarm's events (only managers keep them) from `since` ago until now: a bounded read, never a stream."""
    filters = "".join(f" --filter type={t}" for t in types)
    return Fact(
        f"docker events --since {since_seconds}s --until 0s --filter scope=swarm{filters} --format '{{{{json .}}}}'",
        parse_events,
    )
