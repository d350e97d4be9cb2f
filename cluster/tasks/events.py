"""events: what happened to the swarm (services, nodes, secrets, configs, networks) over a past window,
read from every manager (`docker events --since ... --until 0s`: a bounded read, not a stream), so a rolling
update or the loss of a node can be followed after the fact. Read-only."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cluster.durations import parse_duration
from cluster.errors import CommandFailed, ConfigError, OptionErrors
from cluster.facts import read
from cluster.facts.logs import SwarmEvent, events_since
from cluster.inventory import Node
from cluster.session import Session

EVENT_TYPES = ("service", "node", "secret", "config", "network")
DEFAULT_SINCE = "1h"


@dataclass(frozen=True)
class EventQuery:
    since_seconds: int
    types: tuple[str, ...] = ()  # none: every swarm type


def event_query(since: str = DEFAULT_SINCE, types: str = "") -> EventQuery:
    """--since and --type (one type or several, comma-separated), checked before anything runs."""
    problems: list[ConfigError] = []
    seconds = 0
    try:
        seconds = parse_duration(since, "--since")
    except ConfigError as error:
        problems.append(error)
    wanted = tuple(t.strip() for t in types.split(",") if t.strip())
    unknown = [t for t in wanted if t not in EVENT_TYPES]
    if unknown:
        problems.append(
            ConfigError(
                "--type", types, f"has no swarm event type {', '.join(unknown)}", f"use {'|'.join(EVENT_TYPES)}"
            )
        )
    if problems:
        raise OptionErrors(problems)
    return EventQuery(seconds, tuple(dict.fromkeys(wanted)))


def format_event(event: SwarmEvent) -> str:
    """`time  type  action  name  key=value...` (what changed: old and new states, availability...)."""
    moment = datetime.fromtimestamp(event.time_ns // 1_000_000_000, UTC)
    millis = (event.time_ns // 1_000_000) % 1000
    when = f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"
    details = " ".join(f"{key}={value}" for key, value in event.attributes)
    return f"{when}  {event.type:<7}  {event.action:<6}  {event.name}{'  ' + details if details else ''}"


# One change reaches every manager's event stream a few milliseconds apart: the same event.
SAME_EVENT_WINDOW_NS = 2_000_000_000


def merged(streams: Iterable[Iterable[SwarmEvent]]) -> list[SwarmEvent]:
    """Every manager's events as one list, oldest first, each change once."""
    kept: list[SwarmEvent] = []
    last_seen: dict[tuple[object, ...], int] = {}
    for event in sorted((e for stream in streams for e in stream), key=lambda e: e.time_ns):
        key = (event.type, event.action, event.name, event.attributes)
        if key in last_seen and event.time_ns - last_seen[key] <= SAME_EVENT_WINDOW_NS:
            continue
        last_seen[key] = event.time_ns
        kept.append(event)
    return kept


def swarm_events(session: Session, query: EventQuery, out: Callable[[str], None]) -> int:
    """Print the swarm's events of the window, oldest first; returns how many.

    Every manager is asked, not only the leader: in a `make test` run, after the day-2 tests had
    changed leaders, the leader reported no event at all right after a service update (our reading,
    not proven: its daemon's watch on the store broke with the leader change). The managers are asked at
    once; one that does not answer is skipped, none answering is an error."""
    fact = events_since(query.since_seconds, query.types)

    def ask(manager: Node) -> tuple[SwarmEvent, ...] | CommandFailed:
        try:
            return read(session.runner, manager, fact)
        except CommandFailed as error:
            return error

    answers = list(session.runner.each(session.inventory.managers, ask, "read the swarm's events").values())
    streams = [a for a in answers if not isinstance(a, CommandFailed)]
    if not streams:
        raise next(a for a in answers if isinstance(a, CommandFailed))
    events = merged(streams)
    for event in events:
        out(format_event(event))
    return len(events)
