"""keepalived's configuration for two lb nodes sharing a virtual IP (pure): typed input in, configuration
text and the daemon spec out. A leaf model: it imports nothing of cluster/."""
