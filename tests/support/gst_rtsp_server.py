"""An RTSP server that speaks TCP interleaved only: GStreamer's RTSP server serving one H.264 MP4 file.

Run with the system Python (/usr/bin/python3), which has PyGObject and the GStreamer typelibs from Debian
(python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good/-bad); the project's venv does not:

    /usr/bin/python3 tests/support/gst_rtsp_server.py --port 8554 --path /cam --file clip.mp4
    /usr/bin/python3 tests/support/gst_rtsp_server.py --port 8554 --mounts 20 --file long.mp4

Binds 127.0.0.1 only; the pipeline only repackets the file (filesrc ! qtdemux ! h264parse ! rtph264pay: no
decode, no encode), paced in real time, not looped (make the file as long as the run needs). UDP transport
is refused, so a reader that works proves RTP over the RTSP TCP connection.

- one mount (``--path``, the tests' harness tests/support/gst_rtsp.py): each client gets the file from its
  start;
- ``--mounts N`` (benchmarks/density.py): /cam-0 ... /cam-(N-1), one per camera, each a SHARED media that
  starts when its first client connects (20 clients joining one shared media at once hung in a trial).

Prints "ready rtsp://127.0.0.1:PORT[/PATH]" once listening; SIGTERM/SIGINT stop it. Not part of the package.
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


def factory(location: str, shared: bool) -> GstRtspServer.RTSPMediaFactory:
    made = GstRtspServer.RTSPMediaFactory()
    made.set_launch(f'( filesrc location="{location}" ! qtdemux ! h264parse ! '
                    f"rtph264pay name=pay0 pt=96 config-interval=-1 )")  # SPS/PPS with every keyframe
    made.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    made.set_shared(shared)
    return made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/cam", help="the one mount (without --mounts)")
    ap.add_argument("--mounts", type=int, default=0, help="N shared mounts /cam-0 ... /cam-(N-1) instead")
    ap.add_argument("--file", required=True, help="an MP4 file with one H.264 video track")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    location = args.file.replace("\\", "\\\\").replace('"', '\\"')
    mounts = server.get_mount_points()
    if args.mounts:
        server.set_backlog(max(64, 2 * args.mounts))
        for i in range(args.mounts):
            mounts.add_factory(f"/cam-{i}", factory(location, shared=True))
    else:
        mounts.add_factory(args.path, factory(location, shared=False))
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready rtsp://127.0.0.1:{args.port}{'' if args.mounts else args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
