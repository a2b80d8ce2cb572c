"""A real RTSP server that speaks TCP interleaved (Sightline's default transport), for tests.

``GstRtspServer(file, port)`` runs tests/support/gst_rtsp_server.py with the system Python (Debian's
GStreamer RTSP server via PyGObject), on 127.0.0.1. ``kill()`` ends it at once (SIGKILL: connections
drop as when a camera loses power) and ``start()`` brings it back on the same port. The child dies with
the test process (PR_SET_PDEATHSIG), so a killed test run leaves no server behind.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.support.processes import stop_process

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")
PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
PROBE = ("import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer; "
         "Gst.init(None); missing = [e for e in ('qtdemux', 'h264parse', 'rtph264pay', 'filesrc') "
         "if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))")


def missing_gst() -> str | None:
    """Why the server cannot run here (a reason for ``pytest.skip``), or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (the GStreamer RTSP server runs on the system Python)"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"the GStreamer RTSP server is not importable by {SYSTEM_PYTHON} (Debian packages {PACKAGES})"
    if probe.stdout.strip():
        return f"GStreamer elements missing: {probe.stdout.strip()} (Debian packages {PACKAGES})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class GstRtspServer:
    def __init__(self, file: Path, port: int | None = None, path: str = "/cam") -> None:
        self.file = Path(file)
        self.port = port or free_port()
        self.path = path
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    def start(self, timeout: float = 30.0) -> GstRtspServer:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SCRIPT), "--port", str(self.port), "--path", self.path, "--file", str(self.file)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_parent)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until "ready ..." or the process exits
        if not line.startswith("ready "):
            rest = "" if self.proc.poll() is None else self.proc.stdout.read()
            self.stop()
            raise RuntimeError(f"GStreamer RTSP server did not start: {line}{rest}".strip())
        deadline = time.monotonic() + timeout
        while True:  # listening is announced after attach(); confirm the port takes connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"GStreamer RTSP server not accepting on {self.port}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no TEARDOWN, the TCP connections just drop."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL)
            self._close()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> GstRtspServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
