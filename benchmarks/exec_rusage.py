"""Run one command from a small process and report its wall time, CPU and peak RSS.

Why this exists: Linux records a process's peak RSS across ``exec``, and a child forked (or vforked)
from the benchmark starts with the benchmark's own resident set — so ``os.wait4`` on a direct child
reports at least the benchmark's size (70+ MiB), whatever the tool used. This helper is started with
``python -I -S`` and imports nothing beyond built-ins (a few MiB), forks, execs the command, and
reports what ``os.wait4`` says about that grandchild and its descendants.

Usage: python -I -S exec_rusage.py RESULT_FILE COMMAND [ARG...]
RESULT_FILE gets one line: "<exit code> <wall s> <user+sys CPU s> <peak RSS KiB>".
"""

import os
import sys
import time


def main() -> None:
    result, cmd = sys.argv[1], sys.argv[2:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(cmd[0], cmd)
        except OSError as err:
            os.write(2, f"exec_rusage: cannot run {cmd[0]}: {err}\n".encode())
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    with open(result, "w") as f:
        f.write(f"{os.waitstatus_to_exitcode(status)} {wall:.6f} {usage.ru_utime + usage.ru_stime:.6f} {usage.ru_maxrss}\n")


if __name__ == "__main__":
    main()
