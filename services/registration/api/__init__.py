"""API gateway: REST (basic auth) in front of the RPC workers."""
