"""Runs last: lab-down removes every container, network and volume of the lab."""

from __future__ import annotations

import docker
import pytest

from tests.lab.conftest import LAB_ENV, Lab, fab

pytestmark = pytest.mark.lab


def test_lab_down_leaves_nothing_labelled(lab: Lab) -> None:
    fab("lab-down")
    engine = docker.from_env()
    selector: dict[str, str | list[str] | bool] = {"label": f"swarmlab.cluster={LAB_ENV['SWARMLAB_CLUSTER']}"}
    assert engine.containers.list(all=True, filters=selector) == []
    assert engine.networks.list(filters=selector) == []
    assert engine.volumes.list(filters=selector) == []
    assert not (lab.config.state_path / "inventory.json").exists()
