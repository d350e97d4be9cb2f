"""The one executor: runs a plan's operations on the nodes through a Runner, in order.

It prints what changed, feeds runtime secrets on stdin and masks them in every error, waits with
the project's one wait helper, and in a dry run prints the plan instead of running it.
"""

from __future__ import annotations

from collections.abc import Mapping

from cluster.errors import SwarmlabError
from cluster.inventory import Node
from cluster.operations import Fetch, Operation, Parallel, Plan, Run, Wait, Write, describe
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

    def _run(self, run: Run, progress: PhaseResult) -> None:
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
            progress.changed(run.why)

    def _wait(self, wait: Wait, progress: PhaseResult) -> None:
        node = self._node(wait.node)

        def check() -> Verdict:
            result = self.runner.run(node, wait.command, check=False)
            return wait.verdict(result.stdout)

        verdict = wait_until(check, what=f"on {wait.node}: {wait.what}", timeout=wait.timeout, interval=wait.interval)
        progress.note(f"{wait.what}{': ' + verdict.detail if verdict.detail else ''}")

    def _parallel(self, parallel: Parallel, progress: PhaseResult) -> None:
        by_node = {run.node: run for run in parallel.runs}
        if len(by_node) != len(parallel.runs):
            raise SwarmlabError(f"{parallel.what}: a parallel step may run one command per node")
        nodes = [self._node(name) for name in by_node]
        self.runner.each(nodes, lambda node: self._run(by_node[node.name], progress), parallel.what)
