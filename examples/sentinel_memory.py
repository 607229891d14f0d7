"""Memory of roomguard's Sentinel endpoint under idle and half-written connections.

    roomguard lab --sentinel 127.0.0.1:26401 &      # release build
    python3 examples/sentinel_memory.py <pid of that roomguard> 26401

Prints the RSS of the roomguard process (from /proc/<pid>/status) above its baseline while
connections are opened: idle ones, then each holding a 15 KB half-written request, then more
than `sentinel.max_connections` (refused), then all closed. Keep the count at or below
`max_connections` (default 1024) for the first two steps. Linux only; needs ulimit -n > 3000.
"""

import socket
import sys
import time

pid, port = sys.argv[1], int(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 1000


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


base = rss_kib()
print(f"baseline: {base / 1024:.1f} MiB")
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
time.sleep(1)
print(f"{count} idle connections: +{(rss_kib() - base) / 1024:.1f} MiB")
for s in socks:
    s.sendall(b"*2\r\n$4\r\nECHO\r\n$16000\r\n" + b"x" * 15000)
time.sleep(2)
print(f"{count} x 15 KB half-written requests: +{(rss_kib() - base) / 1024:.1f} MiB")
extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(2000)]
time.sleep(1)
print(f"2000 more connections (over the cap): +{(rss_kib() - base) / 1024:.1f} MiB")
for s in socks + extra:
    s.close()
time.sleep(2)
print(f"all closed: +{(rss_kib() - base) / 1024:.1f} MiB")
probe = socket.create_connection(("127.0.0.1", port))
probe.sendall(b"PING\r\n")
print("endpoint answers:", probe.recv(64))
