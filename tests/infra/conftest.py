"""Program runs shared by the infra tests: each configuration runs once per session (a run is ~0.2 s)."""

from __future__ import annotations

import warnings

import pytest

# pulumi_openstack warns about its own deprecated aliases when imported; nothing here uses them.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import pulumi_openstack  # noqa: F401

from tests.infra.harness import MockRun, run_config


@pytest.fixture(scope="session")
def run_3_3() -> MockRun:
    return run_config({"manager_count": "3", "worker_count": "3"})


@pytest.fixture(scope="session")
def run_5_7() -> MockRun:
    return run_config(
        {
            "manager_count": "5",
            "worker_count": "7",
            "availability_zones": '["az-1", "az-2", "az-3"]',
            "server_group_policy": "soft-anti-affinity",
        }
    )


@pytest.fixture(scope="session", params=["3+3", "5+7"])
def any_run(request: pytest.FixtureRequest, run_3_3: MockRun, run_5_7: MockRun) -> MockRun:
    return run_3_3 if request.param == "3+3" else run_5_7


@pytest.fixture(scope="session")
def run_two_lbs() -> MockRun:
    return run_config({"manager_count": "3", "worker_count": "3", "lb_count": "2"})
