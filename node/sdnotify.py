"""systemd's notify protocol (sd_notify(3)) without libsystemd.

Under a Type=notify unit systemd sets NOTIFY_SOCKET to a datagram socket
(a path, or an abstract name starting with "@"); a service reports its state
by sending "KEY=VALUE" lines to it: READY=1 once it serves, STATUS=... for
`systemctl status`, WATCHDOG=1 at least every WATCHDOG_USEC/2 when the unit
has WatchdogSec=, and STOPPING=1 when it begins to shut down.  Outside
systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # Linux abstract namespace
        self._address = address or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval: float | None = int(usec) / 2e6 if watched else None
        """Seconds between WATCHDOG=1 pings (half the unit's WatchdogSec), or None."""

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> None:
        if self._address is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto("\n".join(lines).encode(), self._address)
            except OSError:
                pass  # systemd went away; the service carries on

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")
