"""The Pulumi (OpenStack) program. Never imports cluster/: the inventory output is the only bridge."""
