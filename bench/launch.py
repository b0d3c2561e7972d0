"""Run one client and write its wall time, CPU and true peak RSS: `python -S -I launch.py OUT ARGV...`.

Why a launcher: Linux records the *old* address space's peak RSS when a process calls execve, and
`ru_maxrss` keeps the maximum. A tool spawned straight from the bench (fork or vfork, then exec)
therefore reports at least the bench's own peak RSS (tens of MB after it has read and hashed files),
which hid small clients such as curl behind a floor of about 40 MB. This launcher is a bare
interpreter (`-S -I`: no site, no environment; stdlib `os`, `sys` and `time` only); its child
inherits only its ~5 MB, so the peak RSS written here is the client's own (floor about 5 MB).

It writes one line to OUT: `wall_s user_s sys_s max_rss_kib exit_code`, wall from fork to exit.
The child inherits stdin, stdout, stderr and the environment.
"""

import os
import sys
import time


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"launch: cannot run {argv[0]}: {exc}", file=sys.stderr)
        os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as fh:
        fh.write(f"{wall} {usage.ru_utime} {usage.ru_stime} {usage.ru_maxrss} {code}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
