"""The RTSP side of benchmarks/density.py: Debian's GStreamer RTSP server, one mount per camera.

Run with the system Python (/usr/bin/python3), which has PyGObject and the GStreamer typelibs from Debian
(python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good, gstreamer1.0-plugins-bad); the
project's venv does not:

    /usr/bin/python3 benchmarks/density_rtsp_server.py --port 8554 --mounts 20 --file long.mp4

Mounts /cam-0 ... /cam-(N-1) on 127.0.0.1 only. Each mount is a SHARED media that only repackets the file
(filesrc ! qtdemux ! h264parse ! rtph264pay: no decode, no encode), paced in real time from the file's
start when its first client connects; it does not loop, so density.py hands it a file longer than a
ladder step. One mount per camera (one client each): 20 clients joining one shared media at once hung in
a trial (issue 24). RTP goes over the RTSP TCP connection (Sightline's default transport). Prints
"ready rtsp://127.0.0.1:PORT" once listening; SIGTERM/SIGINT stop it.
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mounts", type=int, required=True, help="cameras: /cam-0 ... /cam-(N-1)")
    ap.add_argument("--file", required=True, help="an MP4 file with one H.264 video track")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.set_backlog(max(64, 2 * args.mounts))
    location = args.file.replace("\\", "\\\\").replace('"', '\\"')
    mounts = server.get_mount_points()
    for i in range(args.mounts):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f'( filesrc location="{location}" ! qtdemux ! h264parse ! '
                           f"rtph264pay name=pay0 pt=96 config-interval=-1 )")
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        factory.set_shared(True)
        mounts.add_factory(f"/cam-{i}", factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready rtsp://127.0.0.1:{args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
