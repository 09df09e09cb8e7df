"""Small process helpers: free ports, running as an unprivileged user, waiting for readiness."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path


def die_with_parent() -> None:
    """In a child, before exec: get SIGTERM when the process that started it dies, so a killed
    test run or `devstack up` leaves no sidecars or services behind (Linux only)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port() -> int:
    """A free port below the kernel's ephemeral range.

    A port the kernel picks for `bind(0)` comes from the ephemeral range, where any outgoing
    connection may take it again before the server that was meant to get it binds it (a busy
    test run makes thousands). Below the range only our own servers bind, and this process
    never hands the same port out twice."""
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(20000, low)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found below the ephemeral range")


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def as_service_user(argv: Sequence[str], user: str) -> list[str]:
    """PostgreSQL refuses to run as root; when we are root, run it as `user` instead."""
    if os.geteuid() != 0:
        return list(argv)
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", user, "--", *argv]


def chown_to(path: Path, user: str) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} was not ready within {timeout:.0f}s")


class CommandFailed(RuntimeError):
    pass


def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), text=True, capture_output=True, check=False)
    if result.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def proc_stats() -> Iterator[tuple[int, int, int, int]]:
    """(pid, parent pid, process group, CPU ticks: user + system) of every process, from
    /proc/<pid>/stat (Linux only; one tick is 1 / os.sysconf("SC_CLK_TCK") s). A process that
    ends while it is read is left out."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        yield int(entry.name), int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12])
