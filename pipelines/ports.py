"""A free TCP port on 127.0.0.1 for a server this project starts (a mini-cluster's REST
endpoint, a test broker or emulator).

The port is free when chosen and bound later by another process, so something else can take it
in between. Ports from the kernel's ephemeral range (what `bind(0)` returns) are the ones every
outgoing connection on the machine also draws from, which is how that happened on a busy
machine; these come from below it, where only servers that ask for a port by number go.
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 20_000, 32_000  # below Linux's default ephemeral range (32768-60999)


def free_port() -> int:
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(LOW, HIGH)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(n: int) -> str:
    """`a-b`: n consecutive free ports (a Flink reporter range: each JobManager and TaskManager
    takes the next free port of it)."""
    rng = random.SystemRandom()
    for _ in range(200):
        start = rng.randrange(LOW, HIGH - n)
        socks = []
        try:
            for p in range(start, start + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return f"{start}-{start + n - 1}"
    raise OSError(f"no {n} consecutive free ports in {LOW}-{HIGH}")
