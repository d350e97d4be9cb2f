"""The one executor: runs a plan's operations on the nodes through a Runner, in order.

It prints what changed, feeds runtime secrets on stdin and masks them in every error, waits with
the project's one wait helper, and in a dry run prints the plan instead of running it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from cluster.errors import SwarmlabError
from cluster.inventory import Node
from cluster.operations import Fetch, Operation, Parallel, Plan, Run, Wait, Write, describe
from cluster.parallel import at_once
from cluster.progress import PhaseResult
from cluster.runners import Runner
from cluster.waiting import Verdict, wait_until


class Executor:
    def __init__(self, runner: Runner, *, dry_run: bool = False, secrets: Mapping[str, str] | None = None) -> None:
        self.runner = runner
        self.dry_run = dry_run
        self.secrets = dict(secrets or {})

    def execute(self, plan: Plan, progress: PhaseResult) -> None:
        for note in plan.notes:
            progress.note(note)
        for operation in plan.operations:
            if self.dry_run:
                progress.planned(describe(operation), operation.changes)
            else:
                self._one(operation, progress)

    def _one(self, operation: Operation, progress: PhaseResult) -> None:
        if isinstance(operation, Run):
            self._run(operation, progress)
        elif isinstance(operation, Write):
            self.runner.write(self._node(operation.node), operation.path, operation.content, mode=operation.mode)
            if operation.changes:
                progress.changed(operation.why)
        elif isinstance(operation, Fetch):
            self.runner.get(self._node(operation.node), operation.remote, operation.local)
            if operation.changes:
                progress.changed(operation.why)
        elif isinstance(operation, Wait):
            self._wait(operation, progress)
        else:
            self._parallel(operation, progress)

    def _node(self, name: str) -> Node:
        return self.runner.inventory.node(name)

    def _run(self, run: Run, progress: PhaseResult, started: float | None = None) -> None:
        if run.stdin is not None and run.stdin not in self.secrets:
            raise SwarmlabError(f"the plan feeds secret {run.stdin!r} to `{run.command}` but none was provided")
        self.runner.run(
            self._node(run.node),
            run.command,
            stdin=self.secrets.get(run.stdin) if run.stdin else None,
            timeout=run.timeout,
            secrets=tuple(self.secrets.values()),
            hint=run.hint,
        )
        if run.changes:
            # In a parallel step, say when each one finished: a long phase shows its progress.
            elapsed = f" ({time.monotonic() - started:.0f}s)" if started is not None else ""
            progress.changed(run.why + elapsed)

    def _wait(self, wait: Wait, progress: PhaseResult) -> None:
        node = self._node(wait.node)

        started = time.monotonic()
        seen = [""]

        def check() -> Verdict:
            # One poll never outlasts the whole wait: a node that stops answering ends it, named.
            result = self.runner.run(node, wait.command, check=False, timeout=wait.timeout)
            verdict = wait.verdict(result.stdout)
            # Progress as it goes: print what the wait sees whenever it changes, with the time so far.
            summary = verdict.detail.splitlines()[0] if verdict.detail else ""
            if wait.progress and not verdict.done and summary != seen[0]:
                seen[0] = summary
                progress.note(f"[{time.monotonic() - started:.0f}s] {summary}")
            return verdict

        verdict = wait_until(check, what=f"on {wait.node}: {wait.what}", timeout=wait.timeout, interval=wait.interval)
        progress.note(f"{wait.what}{': ' + verdict.detail if verdict.detail else ''}")

    def _parallel(self, parallel: Parallel, progress: PhaseResult) -> None:
        """Every run at once (several may share a node: each gets its own SSH channel); every
        failure is reported, named by node and what the run was for."""
        started = time.monotonic()
        outcomes = at_once(parallel.runs, lambda run: self._run(run, progress, started))
        outcomes.raise_failures(parallel.what, lambda run: f"{run.node} ({run.why})")
