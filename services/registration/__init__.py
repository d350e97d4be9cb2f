"""Student-registration microservices (UI, API gateway, RPC workers, lab mail sink)."""

__version__ = "1.0.0"
