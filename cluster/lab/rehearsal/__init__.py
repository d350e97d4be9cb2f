"""The rehearsal: a cluster whose nodes boot like OpenStack VMs (systemd as PID 1, cloud-init applying the
Pulumi program's own user data from a NoCloud seed), made of containers on the local engine and driven
through the Pulumi provider's code (docs/cloud.md, "The rehearsal")."""
