"""An RTSP server that speaks TCP interleaved only: GStreamer's RTSP server serving one H.264 MP4 file.

Run with the system Python (/usr/bin/python3), which has PyGObject and the GStreamer typelibs from Debian
(python3-gi, gir1.2-gst-rtsp-server-1.0); the project's venv does not:

    /usr/bin/python3 tests/support/gst_rtsp_server.py --port 8554 --path /cam --file clip.mp4

Binds 127.0.0.1 only. Each client gets the file from its start, paced in real time (not looped: make the
file as long as the test needs). UDP transport is refused, so a reader that works proves RTP over the RTSP
TCP connection. Prints "ready rtsp://127.0.0.1:PORT/PATH" once listening. Not part of the package: the
test harness is tests/support/gst_rtsp.py.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--file", required=True, help="an MP4 file with one H.264 video track")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = args.file.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(f'( filesrc location="{location}" ! qtdemux ! h264parse ! '
                       f"rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
