"""Process-level settings of actor processes."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("objectos.actors")


def set_process_niceness(niceness: int | None) -> None:
    """Give every thread of this process ``niceness`` (Linux nice values are per thread).

    Ray starts worker processes at niceness 15 (``RAY_worker_niceness``) so that its
    own daemons stay responsive. A realtime actor at 15 loses every time slice to
    ordinary processes on a busy node, and each hop of an edit (gateway, room,
    gateway) pays for it (numbers in docs/realtime.md). Threads started later
    inherit the value. Lowering the
    value needs privileges (CAP_SYS_NICE); without them Ray's value stays and a
    warning says so.
    """
    if niceness is None or not hasattr(os, "setpriority"):
        return
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    try:
        for tid in threads:
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
    except OSError as exc:
        logger.warning("cannot set niceness %d (%s); keeping Ray's", niceness, exc)


__all__ = ["set_process_niceness"]
