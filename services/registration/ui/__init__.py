"""Web UI: request an OTP, verify it, register. Sessions live in Redis."""
