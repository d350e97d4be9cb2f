"""A stack's Prometheus, asked for one instant query from a node that reaches the workers."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence

from cluster.facts import Fact

Samples = dict[tuple[str, ...], float]


def parse_prometheus_vector(output: str, *labels: str) -> Samples:
    """An instant vector's samples, keyed by the values of `labels` (absent labels are "")."""
    data = json.loads(output)
    if data.get("status") != "success":
        raise ValueError(f"Prometheus answered {data.get('status')}: {data.get('error', '')}")
    found: Samples = {}
    for sample in (data.get("data") or {}).get("result") or []:
        metric = sample.get("metric") or {}
        found[tuple(str(metric.get(label, "")) for label in labels)] = float(sample["value"][1])
    return found


def prometheus_query_command(addresses: Sequence[str], port: int, prefix: str, query: str) -> str:
    url = f'"http://$ip:{port}{prefix}/api/v1/query"'
    data = shlex.quote(f"query={query}")
    return f"for ip in {' '.join(addresses)}; do curl -sf -m 3 -G {url} --data-urlencode {data} && exit 0; done; exit 1"


def prometheus_vector(
    addresses: Sequence[str], port: int, prefix: str, query: str, labels: Sequence[str]
) -> Fact[Samples]:
    """One instant query (`/api/v1/query`), asked of each worker in turn until one answers (Prometheus
    publishes its port in host mode on the worker it runs on); its samples keyed by `labels`. It exits
    1 when no worker answers: read it with check=False and look at the exit status first."""
    return Fact(
        prometheus_query_command(addresses, port, prefix, query),
        lambda output: parse_prometheus_vector(output, *labels),
    )
