"""Worker-id leases: no two live processes ever hold the same worker id."""

from distkit.idgen.lease.base import WorkerLease

__all__ = ["WorkerLease"]
