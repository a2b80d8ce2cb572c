"""A real RTSP server that speaks TCP interleaved (Sightline's default transport), for tests.

``GstRtspServer(file, port)`` runs tests/support/gst_rtsp_server.py with the system Python (Debian's
GStreamer RTSP server via PyGObject), on 127.0.0.1. ``kill()`` ends it at once (SIGKILL: connections
drop as when a camera loses power) and ``start()`` brings it back on the same port. The child dies with
the test process (PR_SET_PDEATHSIG), so a killed test run leaves no server behind.

``GstRtspLivePair(toggle_s)`` runs the same script with ``--live-pair``: a camera's two streams of one live
scene, ``.main_url`` (1280x720 at 30 fps) and ``.sub_url`` (640x360 at 10 fps), the scene switching between
black and white every ``toggle_s`` seconds; ``.toggles()`` lists each switch as the server printed it
(``Toggle(t, state, frame)``, t on time.monotonic(): the same clock as this process's), and every frame
carries its index (``frame_time(index)``: when it left the source; tests/support/live_pair.py reads it).
``missing_gst(live=True)`` says what that mode lacks here.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

from tests.support.processes import stop_process

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")
PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
# the Debian package each element comes in
ELEMENTS = {"filesrc": "gstreamer1.0-plugins-base (core)", "qtdemux": "gstreamer1.0-plugins-good",
            "h264parse": "gstreamer1.0-plugins-bad", "rtph264pay": "gstreamer1.0-plugins-good"}
LIVE_ELEMENTS = {"videotestsrc": "gstreamer1.0-plugins-base", "videorate": "gstreamer1.0-plugins-base",
                 "videoscale": "gstreamer1.0-plugins-base", "tee": "gstreamer1.0-plugins-base (core)",
                 "intervideosink": "gstreamer1.0-plugins-bad", "intervideosrc": "gstreamer1.0-plugins-bad",
                 "x264enc": "gstreamer1.0-plugins-ugly"}
PROBE = ("import sys, gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer; "
         "Gst.init(None); print(' '.join(e for e in sys.argv[1:] if Gst.ElementFactory.find(e) is None))")


def missing_gst(live: bool = False) -> str | None:
    """Why the server cannot run here (a reason for ``pytest.skip``), or None when it can.

    ``live``: also what ``--live-pair`` needs (x264enc, the inter elements, videotestsrc).
    """
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (the GStreamer RTSP server runs on the system Python)"
    wanted = {**ELEMENTS, **(LIVE_ELEMENTS if live else {})}
    probe = subprocess.run([SYSTEM_PYTHON, "-c", PROBE, *wanted], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"the GStreamer RTSP server is not importable by {SYSTEM_PYTHON} (Debian packages {PACKAGES})"
    if missing := probe.stdout.split():
        packages = sorted({wanted[e] for e in missing})
        return f"GStreamer elements missing: {' '.join(missing)} (Debian packages {', '.join(packages)})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Toggle(NamedTuple):
    t: float  # the server's time.monotonic() when the first frame of ``state`` left the scene source
    state: str  # "dark" or "bright"
    frame: int  # that frame's index (painted into every frame: tests/support/live_pair.py reads it)


class _ServerProcess:
    """gst_rtsp_server.py as a child; its output read on a thread (lines kept, "toggle" lines parsed)."""

    def __init__(self, port: int | None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []  # every line the server printed, over all its starts
        self._toggles: list[Toggle] = []
        self._first_of_start = 0  # where the current start's toggles begin in _toggles
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def _args(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> Self:
        self._ready.clear()
        with self._lock:
            self._first_of_start = len(self._toggles)
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SCRIPT), "--port", str(self.port), *self._args()],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):  # "ready ..." or the process exits
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(2)
                said = "".join(self.output[-20:])
                self.stop()
                raise RuntimeError(f"GStreamer RTSP server did not start: {said}".strip())
        while True:  # listening is announced after attach(); confirm the port takes connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"GStreamer RTSP server not accepting on {self.port}") from None
                time.sleep(0.05)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lock:
                self.output.append(line)
                if line.startswith("toggle "):
                    _, t, state, frame = line.split()
                    self._toggles.append(Toggle(float(t), state, int(frame)))
            if line.startswith("ready "):
                self._ready.set()

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
        if self._reader is not None:
            self._reader.join(5)  # the pipe ends with the process
            self._reader = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class GstRtspServer(_ServerProcess):
    """One mount serving ``file`` (each client from its start)."""

    def __init__(self, file: Path, port: int | None = None, path: str = "/cam") -> None:
        super().__init__(port)
        self.file = Path(file)
        self.path = path

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    def _args(self) -> list[str]:
        return ["--path", self.path, "--file", str(self.file)]


class GstRtspLivePair(_ServerProcess):
    """A live scene as a camera's main stream and substream (``--live-pair``), toggling every ``toggle_s``."""

    MAIN_SIZE = (1280, 720)
    MAIN_FPS = 30
    SUB_SIZE = (640, 360)
    SUB_FPS = 10

    def __init__(self, toggle_s: float = 2.0, port: int | None = None) -> None:
        super().__init__(port)
        self.toggle_s = toggle_s

    @property
    def main_url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/main"

    @property
    def sub_url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/sub"

    def _args(self) -> list[str]:
        return ["--live-pair", "--toggle-s", f"{self.toggle_s:g}"]

    def toggles(self, since: float | None = None) -> list[Toggle]:
        """The scene's switches so far (the first of each start is its initial state), after ``since`` if given."""
        with self._lock:
            return [t for t in self._toggles if since is None or t.t > since]

    def frame_time(self, index: int) -> float:
        """When source frame ``index`` of the server's current start left the scene source (time.monotonic()):
        frame 0's time, the median over this start's toggles of t - frame / 30, plus index / 30 (the live
        source is paced by GStreamer's monotonic system clock: no drift against time.monotonic())."""
        with self._lock:
            current = self._toggles[self._first_of_start:]
        if not current:
            raise LookupError("no toggle printed yet")
        return statistics.median(t.t - t.frame / self.MAIN_FPS for t in current) + index / self.MAIN_FPS
