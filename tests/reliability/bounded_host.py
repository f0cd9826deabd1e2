"""`python -m tests.reliability.bounded_host ...`: the local Functions host (tools/local_host, same
arguments) with the two waits that bound recovery after a crash shortened, for the harness only:

    RELIABILITY_LEASE_SECONDS        tools/local_host RECEIVE_VISIBILITY (10 min, as the Functions host):
                                     how long a message received by a host that died stays invisible
    RELIABILITY_STALL_AFTER_SECONDS  the app setting STALL_AFTER_SECONDS (60 s): how overdue a machine's
                                     next step must be before the sweeper queues it again

The lease is the host's, not an app setting, so it is patched in this process before the host starts;
the stall threshold is passed on as the app setting. With both short
a crash test can wait for recovery in seconds and check that what recovery does is correct (each step
then also arrives twice now and then, which the app must tolerate). Unset, nothing is patched.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import tools.local_host.queue_listener
from tools.local_host.__main__ import main

if __name__ == "__main__":
    if os.environ.get("RELIABILITY_LEASE_SECONDS"):
        tools.local_host.queue_listener.RECEIVE_VISIBILITY = timedelta(
            seconds=float(os.environ["RELIABILITY_LEASE_SECONDS"]))
    if os.environ.get("RELIABILITY_STALL_AFTER_SECONDS"):
        os.environ["STALL_AFTER_SECONDS"] = str(int(float(os.environ["RELIABILITY_STALL_AFTER_SECONDS"])))
    sys.exit(main())
