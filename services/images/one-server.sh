# Sourced by an entrypoint just before it execs its server: one server per data directory, ever.
# Swarm starts a replacement task when it loses touch with a node, while the old task may still run
# there (a partition, managers without quorum); both would write the same shared or NFS directory.
# PostgreSQL's postmaster.pid does not stop the second one: in a container both servers are PID 1,
# so each takes the other's lock file for its own stale one (seen in the lab). An exclusive lock on a
# file in the data directory, held on a descriptor the server inherits through exec, does: it is
# released only when the server exits (or, on NFS, when a dead client's lease expires).
hold_data_dir() {  # $1: the lock file; $2: seconds to wait for a holder to stop
    exec 9>>"$1"
    if ! flock --exclusive --nonblock 9; then
        echo "entrypoint: another server holds $1; waiting up to $2 s for it to stop" >&2
        if ! flock --exclusive --wait "$2" 9; then
            echo "entrypoint: $1 is still held after $2 s; exiting (the orchestrator starts the task again)" >&2
            exit 1
        fi
    fi
    echo "entrypoint: holding $1 (one server per data directory)"
}
