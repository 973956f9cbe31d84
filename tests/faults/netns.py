"""A worker behind a link the test can cut: a Linux network namespace joined to this one by a
veth pair (nothing outside this machine), and TCP forwarders on each side of it.

The brokers and the Redis nodes listen on, and advertise, 127.0.0.1 of this namespace. In the
worker's namespace 127.0.0.1 is its own loopback, so a forwarder there listens on the same
ports and crosses the veth to the host end's address, where a forwarder of the test process
hands each connection to 127.0.0.1. ``cut()`` sets the host end of the veth down: every packet
between the worker and the brokers is dropped (no reset, as in a real partition); ``heal()``
sets it up again. Needs root (CAP_NET_ADMIN) and ``ip``; ``available()`` says why not.

Run as ``python -m tests.faults.netns TARGET_HOST PORT...`` (inside the namespace) it is the
namespace's forwarder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from tests.waiting import wait_for


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)  # noqa: S603, S607
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def available() -> str | None:
    """None when namespaces can be made here, else why not (one line)."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) on this machine"
    if os.geteuid() != 0:
        return "not root: creating a network namespace needs CAP_NET_ADMIN"
    probe = f"ssprobe{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        return str(exc)
    _ip("netns", "del", probe)
    return None


class Forwarder:
    """Accepts on ``listen_host``:port for each port and pipes each connection to
    ``target_host``:the same port."""

    def __init__(self, listen_host: str, target_host: str, ports: list[int]) -> None:
        self.target = target_host
        self.servers = [socket.create_server((listen_host, port)) for port in ports]
        self.closed = False
        for server in self.servers:
            threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        port = server.getsockname()[1]
        while not self.closed:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.target, port), timeout=5)
            except OSError:
                client.close()  # the far side is cut off: the client sees a refused connection
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.closed = True
        for server in self.servers:
            server.close()


class Namespace:
    """A namespace ``name`` with a veth pair: ``host_ip`` here, ``inner_ip`` inside. Every
    port in ``ports`` of 127.0.0.1 here is reachable from 127.0.0.1 inside, through the veth."""

    def __init__(self, ports: list[int], log_dir: Path, subnet: int | None = None) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name, self.host_end, self.inner_end = f"ss{tag}", f"ssh{tag}", f"ssi{tag}"
        octet = subnet if subnet is not None else 100 + int(tag[:2], 16) % 100
        self.host_ip, self.inner_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
        self.ports = ports
        self.forwarder: Forwarder | None = None
        self.inner: subprocess.Popen[bytes] | None = None
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_end, "type", "veth", "peer", "name", self.inner_end)
            _ip("link", "set", self.inner_end, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_end)
            _ip("link", "set", self.host_end, "up")
            self.run("ip", "addr", "add", f"{self.inner_ip}/30", "dev", self.inner_end)
            self.run("ip", "link", "set", self.inner_end, "up")
            self.run("ip", "link", "set", "lo", "up")
            self.forwarder = Forwarder(self.host_ip, "127.0.0.1", ports)
            with (log_dir / f"{self.name}-forwarder.log").open("wb") as log:
                self.inner = subprocess.Popen(  # noqa: S603 (our own forwarder)
                    self.argv(
                        sys.executable, "-m", "tests.faults.netns", self.host_ip, *map(str, ports)
                    ),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=Path(__file__).resolve().parents[2],  # `-m tests.faults.netns`
                )
            wait_for(self._inner_listens, 20, "the namespace's forwarder to listen")
        except BaseException:
            self.close()
            raise

    def argv(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str) -> None:
        done = subprocess.run(self.argv(*argv), capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {self.name}: {done.stderr.strip()}")

    def _inner_listens(self) -> bool:
        assert self.inner is not None and self.inner.poll() is None, "forwarder exited"
        probe = subprocess.run(  # noqa: S603
            self.argv(
                sys.executable,
                "-c",
                f"import socket; socket.create_connection(('127.0.0.1', {self.ports[0]}), 2)",
            ),
            capture_output=True,
            check=False,
        )
        return probe.returncode == 0

    def cut(self) -> None:
        _ip("link", "set", self.host_end, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_end, "up")

    def close(self) -> None:
        if self.inner is not None and self.inner.poll() is None:
            self.inner.kill()
            self.inner.wait(10)
        if self.forwarder is not None:
            self.forwarder.close()
        try:
            _ip("netns", "del", self.name)  # the veth pair goes with it
        except RuntimeError:
            pass


if __name__ == "__main__":
    target, *ports = sys.argv[1:]
    Forwarder("127.0.0.1", target, [int(p) for p in ports])
    threading.Event().wait()
