"""A real RTSP server for tests: Debian's rtsp-server-perl, fed by an ffmpeg publisher.

    with RtspServer() as server, RtspPublisher(server, "cam1", clip) as pub:
        av.open(pub.url, options={"rtsp_transport": "udp"}, timeout=(5, 5))

``RtspServer`` runs ``tests/support/rtsp_server.pl`` (the Debian RTSP::Server module, started as
/usr/bin/rtsp-server-perl starts it, plus fixes listed in that file) on 127.0.0.1 with free high
ports: ``source_port`` takes publishers (ANNOUNCE/SETUP/RECORD, RTP over UDP), ``client_port``
serves readers (DESCRIBE/SETUP/PLAY). ``RtspPublisher`` is ``ffmpeg -re -stream_loop -1 -i FILE
-c:v copy -f rtsp -rtsp_transport udp`` (or libx264 ``-tune zerolatency`` with ``transcode=True``).

Observed with rtsp-server-perl 0.06, system ffmpeg 5.1 as publisher and PyAV 18.1 (FFmpeg 8.1)
as reader, 160x120 H.264 at 25 fps, on a loaded 2-core machine (tests/stream/sources/test_rtsp_harness.py
pins each point down):

- Transport: UDP only. ``rtsp_transport="udp"`` (or no option: FFmpeg tries UDP first) works;
  ``"tcp"`` fails at ``av.open`` with ``av.error.HTTPBadRequestError`` ("Server returned 400 Bad
  Request"), because the server's SETUP requires ``client_port=`` and has no interleaved mode.
  Publishers must use UDP too. (stream/config.py defaults RTSP sources to tcp: set udp for this server.)
- Unknown path: ``av.open`` raises ``av.error.HTTPNotFoundError`` ("Server returned 404 Not Found")
  at once. The path appears with the publisher's ANNOUNCE (``RtspPublisher.start`` waits for it,
  ~0.5-0.6 s after launching ffmpeg) and readers get the publisher's SDP verbatim.
- Latency: ``av.open`` takes ~1.0 s (stream-info probing; ~1.2-1.5 s with a transcoding
  publisher); the first frame follows at once when the file has a keyframe every second (a
  copied stream is decoded from the next keyframe only: with one keyframe per 10 s a late reader
  waited ~8 s, hence ``transcode=True``). Steady state, frame i arrived at most 0.19-0.20 s after
  publisher launch + i/fps (this bound includes ffmpeg's own start-up).
- Publisher stops politely (``stop()``: SIGINT, ffmpeg sends TEARDOWN, exits in ~0.03 s): the
  server unmounts the path but never tells readers (no BYE/EOF; "TODO" in its source). A reader
  only finds out through PyAV's read timeout, which fires twice: the first one flushes the last
  frame out of FFmpeg's parser, the second raises ``av.error.ExitError`` ("Immediate exit
  requested", errno AVERROR_EXIT) -- about 2x the read timeout after the last packet: 10.1 s with
  ``timeout=(5, 5)``, 4.0 s with ``(5, 2)``, ~2 s with ``(5, 1)``. ``ExitError`` is not a
  ``TimeoutError`` subclass (FFmpegError -> Exception). The old reader never receives anything
  again, even after a republish: it must reconnect.
- Publish again on the same path after a polite stop: works; a new reader decodes frames
  (open ~1 s as above). Several readers on one path at once work.
- Publisher killed (``abort()``: SIGKILL, no TEARDOWN): the path stays mounted for the server's
  life. Readers connected at the time time out as above (ExitError after 2x the read timeout).
  New readers' ``av.open`` succeeds (SDP still served) after the open timeout expires during
  probing (~5 s with ``timeout=(5, x)``), then reads raise ExitError. A new publisher on that
  path gets "403 Forbidden" (ffmpeg exits); ``RtspPublisher.start`` refuses such a path.
- Server stops under a reader: the RTSP TCP connection closes and the reader's decode loop ends
  with plain end-of-stream (no exception) within ~0.01 s. The publisher exits too
  ("av_interleaved_write_frame(): Broken pipe").
- Start-up: the server (perl + Moose) listens ~0.6-1.8 s after launch; stop takes < 0.1 s. The
  server hands out two UDP ports per published stream and per reader from ``rtp_start_port``,
  never reused while anything is mounted; the harness gives each server its own block of 200.
- No orphans: if the test process is killed outright, the server notices its parent is gone and
  exits within ~1 s, and the publisher follows (broken pipe); measured ~1.5-2 s for both.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.support.processes import stop_process

HOST = "127.0.0.1"
LAUNCHER = Path(__file__).with_name("rtsp_server.pl")
SERVER_BINARY = "/usr/bin/rtsp-server-perl"
# UDP ports the server hands out for RTP/RTCP (two per published stream and two per reader, never reused
# while anything is mounted). Chosen below the kernel's ephemeral range so clients' own ports do not collide.
RTP_PORT_RANGE = (20000, 32000)
RTP_PORTS_PER_SERVER = 200


def missing_tools() -> str | None:
    """Why the harness cannot run here (a reason for ``pytest.skip``), or None when it can."""
    if not Path(SERVER_BINARY).exists():
        return f"{SERVER_BINARY} not installed (Debian package rtsp-server-perl)"
    if shutil.which("perl") is None:
        return "perl not installed"
    if shutil.which("ffmpeg") is None:
        return "ffmpeg not installed (the RTSP publisher)"
    probe = subprocess.run(["perl", "-MRTSP::Server", "-e", "1"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"perl cannot load RTSP::Server: {probe.stderr.strip()[:200]}"
    return None


def free_tcp_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_udp_block(count: int, host: str = HOST, tries: int = 50) -> int:
    """An even port P such that UDP ports P .. P+count-1 are all free right now."""
    rng = random.SystemRandom()
    low, high = RTP_PORT_RANGE
    for _ in range(tries):
        base = rng.randrange(low, high - count) & ~1
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no block of {count} free UDP ports in {RTP_PORT_RANGE}")


def rtsp_status(url: str, timeout: float = 2.0) -> int:
    """The status code of an RTSP DESCRIBE of ``url`` (200 while published, 404 when not)."""
    rest = url.removeprefix("rtsp://")
    hostport = rest.split("/", 1)[0]
    host, _, port = hostport.partition(":")
    request = f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode()
    with socket.create_connection((host, int(port or 554)), timeout=timeout) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    status_line = reply.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith("RTSP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an RTSP reply from {hostport}: {status_line!r}")
    return int(parts[1])


def _read_log(log: IO[bytes] | None) -> str:
    if log is None:
        return ""
    log.flush()
    log.seek(0)
    return log.read().decode("utf-8", "replace")


class RtspServer:
    """rtsp-server-perl on 127.0.0.1: publishers ANNOUNCE/RECORD on ``source_port``, readers PLAY on ``client_port``.

    Use as a context manager; ``start()`` returns once both ports accept connections, ``stop()``
    ends the process (SIGTERM, then SIGKILL) and reaps it.
    """

    def __init__(self, *, rtp_ports: int = RTP_PORTS_PER_SERVER, log_level: int = 3) -> None:
        self.rtp_ports = rtp_ports
        self.log_level = log_level
        self.client_port = 0
        self.source_port = 0
        self.rtp_start_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def url(self, path: str) -> str:
        """Where readers open ``path`` (UDP transport only; see the module notes)."""
        return f"rtsp://{HOST}:{self.client_port}/{path.strip('/')}"

    def publish_url(self, path: str) -> str:
        """Where a publisher ANNOUNCEs ``path``."""
        return f"rtsp://{HOST}:{self.source_port}/{path.strip('/')}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """Everything the server has logged so far (connections, mounts, errors)."""
        return _read_log(self._log)

    def start(self, timeout: float = 10.0, *, client_port: int = 0, source_port: int = 0) -> RtspServer:
        """Start on free ports, or on the given ones (a restart on the ports readers already use)."""
        if self._proc is not None:
            raise RuntimeError("RTSP server already started")
        self.client_port = client_port or free_tcp_port()
        self.source_port = source_port or free_tcp_port()
        while self.source_port == self.client_port:
            self.source_port = free_tcp_port()
        self.rtp_start_port = free_udp_block(self.rtp_ports)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the process it logs
        cmd = ["perl", str(LAUNCHER),
               "--clientport", str(self.client_port), "--serverport", str(self.source_port),
               "--client_listen_address", HOST, "--source_listen_address", HOST,
               "--rtp_start_port", str(self.rtp_start_port), "--loglevel", str(self.log_level)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        pending = {self.client_port, self.source_port}
        while pending:
            if self._proc.poll() is not None:
                log = self.log_text()
                self.stop()
                raise RuntimeError(f"rtsp-server-perl exited with {self._proc.returncode}:\n{log}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"rtsp-server-perl did not listen within {timeout:.0f}s")
            for port in list(pending):
                try:
                    socket.create_connection((HOST, port), timeout=0.5).close()
                    pending.discard(port)
                except OSError:
                    time.sleep(0.05)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._proc is not None:
            stop_process(self._proc, signal.SIGTERM, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def is_published(self, path: str) -> bool:
        """True while a publisher holds ``path`` (a DESCRIBE on the client port answers 200)."""
        return rtsp_status(self.url(path)) == 200

    def wait_published(self, path: str, published: bool = True, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.is_published(path) != published:
            if time.monotonic() > deadline:
                state = "published" if published else "unpublished"
                raise TimeoutError(f"{path} not {state} after {timeout:.0f}s; server log:\n{self.log_text()}")
            time.sleep(0.05)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class RtspPublisher:
    """An ``ffmpeg -re -stream_loop -1`` process publishing ``video_file``'s video to ``server`` at ``path``.

    ``transcode=False`` copies the H.264 stream as is (cheap; the file needs frequent keyframes, as
    ``stream.media`` clips have, or a reader waits for the next one); ``transcode=True`` re-encodes
    with libx264 ``-tune zerolatency`` and a keyframe every ``gop`` frames. Audio is dropped.
    """

    def __init__(self, server: RtspServer, path: str, video_file: str | os.PathLike[str], *,
                 transcode: bool = False, gop: int = 25, loop: bool = True, realtime: bool = True) -> None:
        self.server = server
        self.path = path.strip("/")
        self.video_file = Path(video_file)
        self.transcode = transcode
        self.gop = gop
        self.loop = loop
        self.realtime = realtime
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Where a reader opens this stream."""
        return self.server.url(self.path)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning"]
        if self.realtime:
            cmd.append("-re")
        if self.loop:
            cmd += ["-stream_loop", "-1"]
        cmd += ["-i", str(self.video_file), "-map", "0:v:0", "-an"]
        if self.transcode:
            cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                    "-g", str(self.gop), "-pix_fmt", "yuv420p"]
        else:
            cmd += ["-c:v", "copy"]
        # The server receives RTP over UDP only (it has no interleaved-TCP mode).
        return cmd + ["-f", "rtsp", "-rtsp_transport", "udp", self.server.publish_url(self.path)]

    def log_text(self) -> str:
        return _read_log(self._log)

    def start(self, timeout: float = 10.0) -> RtspPublisher:
        """Launch ffmpeg and return once the server lists the path (ANNOUNCE done, RECORD following)."""
        if self.running:
            raise RuntimeError(f"publisher for {self.path} already running")
        if not self.video_file.is_file():
            raise FileNotFoundError(self.video_file)
        if self.server.is_published(self.path):
            raise RuntimeError(f"{self.path} is already published on this server (another publisher, or a "
                               "stale mount left by abort()); use another path")
        if self._log is not None:
            self._log.close()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the process it logs
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.server.is_published(self.path):
            if self._proc.poll() is not None:
                raise RuntimeError(f"ffmpeg publisher for {self.path} exited with {self._proc.returncode}:\n"
                                   f"{self.log_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.path} not published after {timeout:.0f}s:\n{self.log_text()}")
            time.sleep(0.05)
        # DESCRIBE answers from ANNOUNCE on; give ffmpeg a moment for SETUP/RECORD so a reader's SETUP finds it.
        time.sleep(0.2)
        if self._proc.poll() is not None:
            raise RuntimeError(f"ffmpeg publisher for {self.path} exited with {self._proc.returncode}:\n"
                               f"{self.log_text()}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop like a camera going offline politely: SIGINT makes ffmpeg send TEARDOWN, freeing the path.

        Returns once the server no longer lists the path, so the same path can be published again.
        """
        if not self.running:
            return
        assert self._proc is not None
        stop_process(self._proc, signal.SIGINT, timeout)
        if self.server.running:
            self.server.wait_published(self.path, published=False, timeout=timeout)

    def abort(self) -> None:
        """Stop like a camera losing power: SIGKILL, no TEARDOWN. The server keeps the path mounted
        (stale) for the rest of its life: readers can still open it but receive nothing, and a new
        publisher on the same path is refused (403)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> RtspPublisher:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
