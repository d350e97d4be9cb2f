"""Workload bundles: one directory per stack (see cluster/workload.py for what a bundle holds)."""

# The stack `fab deploy-stack` deploys when swarmlab.yaml names none.
DEFAULT_WORKLOAD = "registration"
