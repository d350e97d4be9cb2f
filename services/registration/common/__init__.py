"""Code shared by every registration service: settings, secrets, RPC, logging, health."""
