"""Names the swarm lists one a line (services, stacks, secrets, configs, and those still in use),
and the service table `fab status` prints as Docker gives it."""

from __future__ import annotations

from cluster.facts import Fact
from cluster.facts.text import parse_lines

SERVICE_NAMES = Fact("docker service ls --format '{{.Name}}'", parse_lines)
STACK_NAMES = Fact("docker stack ls --format '{{.Name}}'", parse_lines)
SECRET_NAMES = Fact("docker secret ls --format '{{.Name}}'", parse_lines)
CONFIG_NAMES = Fact("docker config ls --format '{{.Name}}'", parse_lines)
# The secrets and configs some service still mounts (Docker refuses to remove those).
SECRETS_IN_USE = Fact(
    'ids=$(docker service ls -q); [ -z "$ids" ] || docker service inspect --format '
    "'{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{println .SecretName}}{{end}}' $ids",
    parse_lines,
)
CONFIGS_IN_USE = Fact(
    'ids=$(docker service ls -q); [ -z "$ids" ] || docker service inspect --format '
    "'{{range .Spec.TaskTemplate.ContainerSpec.Configs}}{{println .ConfigName}}{{end}}' $ids",
    parse_lines,
)


def parse_table(output: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(line.split("|")) for line in output.splitlines() if line.strip())


# NAME, MODE, REPLICAS, IMAGE of every service, as the CLI shows them.
SERVICE_TABLE = Fact("docker service ls --format '{{.Name}}|{{.Mode}}|{{.Replicas}}|{{.Image}}'", parse_table)
