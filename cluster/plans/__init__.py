"""Pure planners: facts read from the nodes in, a Plan of typed operations out (cluster/operations.py)."""
