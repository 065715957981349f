"""The watch that keeps an embedded server (:mod:`relay.embedded`) from outliving its parent.

Run as a script, never imported by relay (only the standard library, so it starts in a few
milliseconds)::

    python -I embedded_watch.py WORKDIR SERVER [SERVER ARGS...]

It starts ``SERVER ARGS`` in ``WORKDIR`` (output to ``WORKDIR/server.log``), prints the
server's pid on a line of its own, and then waits for its standard input to close. That pipe's
write end is held by the parent alone, so it closes when the parent stops the server, exits,
or is killed (SIGKILL included). Then, or when the server exits by itself, or on SIGTERM, the
watch stops the server (SIGTERM, SIGKILL after ``STOP_WAIT_S``), removes ``WORKDIR`` and exits
with the server's exit code; when the server exited by itself, the end of its log goes to
standard output first. On Linux the server is also started with a parent-death signal,
so it dies even if the watch itself is killed.
"""

from __future__ import annotations

import ctypes
import os
import selectors
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

STOP_WAIT_S = 10.0
POLL_S = 0.2
LOG_TAIL = 4000
PR_SET_PDEATHSIG = 1


def _die_with_watch() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` that gives the server SIGKILL when the watch dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, used after it

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


def _stop(server: subprocess.Popen[bytes]) -> int:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            server.kill()
    return server.wait()


def _report_exit(log: Path) -> None:
    """The server exited by itself: pass the end of its log on before the directory goes."""
    try:
        tail = log.read_bytes()[-LOG_TAIL:]
    except OSError:
        tail = b""
    sys.stdout.buffer.write(tail)
    sys.stdout.flush()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def watch(workdir: Path, command: Sequence[str]) -> int:
    """Run ``command`` in ``workdir`` until standard input closes; returns its exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent
    signal.signal(signal.SIGTERM, _on_sigterm)
    server: subprocess.Popen[bytes] | None = None
    try:
        with (workdir / "server.log").open("ab") as log:
            server = subprocess.Popen(
                list(command),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_watch(),  # the watch has no other thread
            )
        sys.stdout.write(f"{server.pid}\n")
        sys.stdout.flush()
        parent = sys.stdin.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(parent, selectors.EVENT_READ)
            while server.poll() is None:
                if sel.select(POLL_S) and not os.read(parent, 4096):
                    return _stop(server)  # end of file: the parent is done with it, or gone
        _report_exit(workdir / "server.log")
        return server.returncode
    finally:
        if server is not None:
            _stop(server)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: embedded_watch.py WORKDIR SERVER [ARGS...]\n")
        return 2
    return watch(Path(argv[0]), argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
