"""The stand-in for `pulumi stack output`: prints an output of the rehearsal's stack, as the Pulumi
program exported it under mocks when the rehearsal was made (state: <state_dir>/rehearsal/<cluster>/).

    python -m cluster.lab.rehearsal.stack output inventory --json

The cluster is the configured one (swarmlab.yaml, SWARMLAB_CLUSTER), as the Pulumi CLI picks the
selected stack from its project's directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cluster.config import Config, load_config
from cluster.lab.rehearsal.provider import NAME

OUTPUTS_FILE = "stack-outputs.json"


def outputs_path(config: Config) -> Path:
    return config.state(provider=NAME).root / OUTPUTS_FILE


def read_outputs(config: Config) -> dict[str, Any]:
    path = outputs_path(config)
    if not path.exists():
        raise FileNotFoundError(f"rehearsal {config.cluster!r} is not up (no {path}): run `fab rehearsal-up` first")
    found: dict[str, Any] = json.loads(path.read_text())
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "output":
        print("usage: python -m cluster.lab.rehearsal.stack output NAME [--json]", file=sys.stderr)
        return 2
    try:
        outputs = read_outputs(load_config())
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if argv[1] not in outputs:
        print(f"error: the stack has no output {argv[1]!r} (it has {', '.join(sorted(outputs))})", file=sys.stderr)
        return 1
    value = outputs[argv[1]]
    print(json.dumps(value, indent=2) if "--json" in argv or not isinstance(value, str) else value)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
