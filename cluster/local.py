"""Commands on the operator's machine, through invoke's runner (the one Fabric's tasks already use).

One place turns a failed local command into an error that names localhost, the command and the
output tail, the same shape as a failed command on a node.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from invoke.context import Context

from cluster.errors import CommandFailed


def run_local(command: Sequence[str], *, hint: str = "", secrets: Sequence[str] = ()) -> str:
    """Run a command (an argument list, quoted here) and return its stdout; raise CommandFailed on failure."""
    line = shlex.join(command)
    result = Context().run(line, hide=True, warn=True, in_stream=False)
    if result is None or result.exited != 0:
        output = "" if result is None else result.stdout + result.stderr
        for secret in secrets:
            output = output.replace(secret, "***") if secret else output
        raise CommandFailed("localhost", line, None if result is None else result.exited, output, hint)
    return str(result.stdout)
