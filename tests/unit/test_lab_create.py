"""lab-up's node creation: the storage node's container is made before any other mounts the data volume."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from docker.errors import APIError

from cluster.config import parse_config
from cluster.lab import provider
from cluster.lab.layout import lab_nodes
from cluster.progress import PhaseResult
from cluster.providers import lab_provider
from cluster.providers.base import LabTasks
from cluster.state import StatePaths


def test_the_storage_node_is_created_alone_before_the_nodes_that_share_its_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def create(build: Any, node: Any) -> None:
        with lock:
            events.append(("start", node.name))
        time.sleep(0.02)  # long enough for parallel creations to overlap
        with lock:
            events.append(("end", node.name))

    monkeypatch.setattr(provider, "_create_node", create)
    build = provider.LabBuild(parse_config({}), engine=None, paths=StatePaths(Path("/state")))  # type: ignore[arg-type]
    provider.create_nodes(build, PhaseResult("lab-nodes"))
    assert events[:2] == [("start", "storage-1"), ("end", "storage-1")]
    starts = [name for kind, name in events if kind == "start"]
    assert sorted(starts) == sorted(n.name for n in lab_nodes(build.config))
    # the others are still made at once, not one after the other
    assert events[2][0] == "start" and events[3][0] == "start"


def test_a_failed_creation_raises_its_own_error_once_every_other_node_was_tried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # lab-up turns the engine's own error (DockerException) into "the local Docker engine said": it must
    # come up as it is, not wrapped; the first failing node's, in the lab's node order.
    tried: list[str] = []
    lock = threading.Lock()
    errors = {"worker-1": APIError("worker-1 refused"), "worker-3": APIError("worker-3 refused")}

    def create(build: Any, node: Any) -> None:
        with lock:
            tried.append(node.name)
        if node.name in errors:
            raise errors[node.name]

    monkeypatch.setattr(provider, "_create_node", create)
    build = provider.LabBuild(parse_config({}), engine=None, paths=StatePaths(Path("/state")))  # type: ignore[arg-type]
    with pytest.raises(APIError) as caught:
        provider.create_nodes(build, PhaseResult("lab-nodes"))
    assert caught.value is errors["worker-1"]
    assert sorted(tried) == sorted(n.name for n in lab_nodes(build.config))


def test_the_lab_tasks_are_reached_through_the_provider_registry() -> None:
    tasks: LabTasks = provider.LabProvider()  # mypy checks the lab provider's signatures against LabTasks
    assert isinstance(lab_provider(), provider.LabProvider) and isinstance(tasks, LabTasks)
