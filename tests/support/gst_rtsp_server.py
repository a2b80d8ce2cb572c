"""An RTSP server that speaks TCP interleaved only: GStreamer's RTSP server serving H.264 files or a live scene.

Run with the system Python (/usr/bin/python3), which has PyGObject and the GStreamer typelibs from Debian
(python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good/-bad; ``--live-pair`` also needs x264enc
from gstreamer1.0-plugins-ugly); the project's venv does not:

    /usr/bin/python3 tests/support/gst_rtsp_server.py --port 8554 --path /cam --file clip.mp4
    /usr/bin/python3 tests/support/gst_rtsp_server.py --port 8554 --mounts 20 --file long.mp4 [--sub-file sub.mp4]
    /usr/bin/python3 tests/support/gst_rtsp_server.py --port 8554 --live-pair --toggle-s 2

Binds 127.0.0.1 only. UDP transport is refused, so a reader that works proves RTP over the RTSP TCP connection.

- one mount (``--path``, the tests' harness tests/support/gst_rtsp.py): each client gets the file from its
  start; the pipeline only repackets the file (filesrc ! qtdemux ! h264parse ! rtph264pay: no decode, no
  encode), paced in real time, not looped (make the file as long as the run needs);
- ``--mounts N`` (benchmarks/density.py, benchmarks/camera_inputs.py): /cam-0 ... /cam-(N-1), one per camera,
  each a SHARED media of ``--file`` that starts when its first client connects (20 clients joining one shared
  media at once hung in a trial); with ``--sub-file`` also /cam-0-sub ... /cam-(N-1)-sub (shared, the same way)
  serving that file: a camera's second stream (a smaller substream beside its main stream);
- ``--live-pair``: one LIVE scene (videotestsrc is-live=true, 1280x720 at 30 fps) that switches between all
  black ("dark") and all white ("bright") every ``--toggle-s`` seconds, teed into two encoders as a camera's
  two streams: /main 1280x720 at 30 fps and /sub 640x360 at 10 fps (videorate + videoscale), each x264enc
  tune=zerolatency speed-preset=ultrafast with a keyframe every second and no B-frames. Both mounts are
  shared and take their raw frames from the one running scene (intervideosink -> intervideosrc), so they
  show the same moment, as a real camera's main stream and substream do. Every change of the scene is
  printed as ``toggle <t> <state> <frame>`` with t the server's time.monotonic() (CLOCK_MONOTONIC: the same
  clock as a client's time.monotonic() on this machine) when the first frame of the new state left the scene
  source (the pixel is read from the frame, not assumed from the timer) and that frame's index (0 the
  scene's first); the first such line is the initial state. Every frame carries its index, painted as a row
  of black/white blocks near the top-left corner (``paint_code``), so a client can tell which source frame
  it decoded and when it was made (frame i left the source 1/30 s after frame i-1). Each mount's encoder
  runs while it has a client (and starts again with a keyframe for the next).

Prints "ready rtsp://127.0.0.1:PORT[/PATH]" once listening; SIGTERM/SIGINT stop it. Not part of the package.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

MAIN = (1280, 720, 30)  # width, height, fps of --live-pair's /main
SUB = (640, 360, 10)  # and of its /sub
CODE_BITS, CODE_BLOCK = 24, 16  # the frame index painted into --live-pair's frames (at /main's size)
_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def quoted(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def shaped(launch: str, shared: bool) -> GstRtspServer.RTSPMediaFactory:
    made = GstRtspServer.RTSPMediaFactory()
    made.set_launch(launch)
    made.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    made.set_shared(shared)
    return made


def factory(location: str, shared: bool) -> GstRtspServer.RTSPMediaFactory:
    return shaped(f"( filesrc location={quoted(location)} ! qtdemux ! h264parse ! "
                  f"rtph264pay name=pay0 pt=96 config-interval=-1 )", shared)  # SPS/PPS with every keyframe


def paint_code(frame: bytes, index: int, width: int) -> bytes:
    """``frame`` (I420) with ``index`` painted in: CODE_BITS blocks of CODE_BLOCK px in a row, one block down and
    one in from the top-left corner, most significant first, white (235) a 1 and black (16) a 0: the frame's
    index in its low CODE_BITS - 4 bits, those bits' value modulo 15 in the last 4 (a check). tests/support/live_pair.py
    reads it back (its constants must match these)."""
    low = index % (1 << (CODE_BITS - 4))
    value = (low << 4) | (low % 15)
    row = b"".join((b"\xeb" if value >> (CODE_BITS - 1 - k) & 1 else b"\x10") * CODE_BLOCK for k in range(CODE_BITS))
    out = bytearray(frame)
    for r in range(CODE_BLOCK, 2 * CODE_BLOCK):
        at = r * width + CODE_BLOCK
        out[at:at + len(row)] = row
    return bytes(out)


def raw_caps(width: int, height: int, fps: int) -> str:
    return f"video/x-raw,format=I420,width={width},height={height},framerate={fps}/1,pixel-aspect-ratio=1/1"


class LiveScene:
    """videotestsrc is-live 1280x720 at 30 fps, black/white toggled every ``toggle_s``; each frame handed to the
    /main mount's encoder and every ``MAIN fps / SUB fps``-th frame to the /sub mount's (scaled there)."""

    def __init__(self, toggle_s: float) -> None:
        self.pipeline = Gst.parse_launch(
            f"videotestsrc name=scene is-live=true pattern=black ! {raw_caps(*MAIN)} ! "
            f"appsink name=out emit-signals=true sync=false max-buffers=2 drop=true")
        self.scene = self.pipeline.get_by_name("scene")
        self.pipeline.get_by_name("out").connect("new-sample", self._on_sample)
        self.toggle_s = toggle_s
        self.bright = False
        self.shown: str | None = None
        self.frames = 0
        self.every = {"main": 1, "sub": MAIN[2] // SUB[2]}
        self.feeds: dict[str, list[Gst.Element]] = {"main": [], "sub": []}  # appsrc of each playing media
        self.lock = threading.Lock()

    def factory(self, which: str) -> GstRtspServer.RTSPMediaFactory:
        """A shared mount encoding the frames this scene hands it (an appsrc, timestamped as they come)."""
        width, height, fps = MAIN if which == "main" else SUB
        made = shaped(f"( appsrc name=feed is-live=true do-timestamp=true format=time "
                      f"caps={raw_caps(MAIN[0], MAIN[1], fps)} max-buffers=2 leaky-type=downstream ! "
                      f"videoscale ! {raw_caps(width, height, fps)} ! "
                      f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bframes=0 threads=1 ! "
                      f"video/x-h264,profile=constrained-baseline ! "
                      f"h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )", shared=True)
        made.connect("media-configure", self._on_media, which)
        return made

    def _on_media(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia,
                  which: str) -> None:
        feed = media.get_element().get_by_name("feed")
        with self.lock:
            self.feeds[which].append(feed)
        media.connect("unprepared", self._on_gone, which, feed)

    def _on_gone(self, _media: GstRtspServer.RTSPMedia, which: str, feed: Gst.Element) -> None:
        with self.lock:
            if feed in self.feeds[which]:
                self.feeds[which].remove(feed)

    def _on_sample(self, sink: Gst.Element) -> Gst.FlowReturn:
        buf = sink.emit("pull-sample").get_buffer()
        ok, mapped = buf.map(Gst.MapFlags.READ)
        if not ok:
            return Gst.FlowReturn.OK
        try:
            data = mapped.data  # a copy (PyGObject maps to bytes)
        finally:
            buf.unmap(mapped)
        index = self.frames
        self.frames += 1
        state = "bright" if data[0] > 128 else "dark"  # Y of the first pixel: 16 black, 235 white
        if state != self.shown:
            self.shown = state
            say(f"toggle {time.monotonic():.6f} {state} {index}")
        with self.lock:
            feeds = [feed for which, every in self.every.items() if index % every == 0 for feed in self.feeds[which]]
        if feeds:
            painted = Gst.Buffer.new_wrapped(paint_code(data, index, MAIN[0]))
            for feed in feeds:  # each its own buffer (sharing the memory): the feed stamps its own arrival on it
                feed.emit("push-buffer", painted.copy())
        return Gst.FlowReturn.OK

    def _toggle(self) -> bool:
        self.bright = not self.bright
        self.scene.set_property("pattern", "white" if self.bright else "black")
        return True

    def start(self) -> None:
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError("the live scene did not start")
        GLib.timeout_add(max(1, round(1000 * self.toggle_s)), self._toggle)

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/cam", help="the one mount (without --mounts)")
    ap.add_argument("--mounts", type=int, default=0, help="N shared mounts /cam-0 ... /cam-(N-1) instead")
    ap.add_argument("--file", help="an MP4 file with one H.264 video track")
    ap.add_argument("--sub-file", help="with --mounts: also /cam-i-sub, each serving this file")
    ap.add_argument("--live-pair", action="store_true", help="a live scene as /main (720p30) and /sub (360p10)")
    ap.add_argument("--toggle-s", type=float, default=2.0, help="--live-pair: the scene toggles this often")
    args = ap.parse_args()
    if args.live_pair == bool(args.file):
        ap.error("give --file or --live-pair (one of them)")
    if args.sub_file and not args.mounts:
        ap.error("--sub-file goes with --mounts")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    scene = None
    if args.live_pair:
        scene = LiveScene(args.toggle_s)
        mounts.add_factory("/main", scene.factory("main"))
        mounts.add_factory("/sub", scene.factory("sub"))
    elif args.mounts:
        server.set_backlog(max(64, (4 if args.sub_file else 2) * args.mounts))
        for i in range(args.mounts):
            mounts.add_factory(f"/cam-{i}", factory(args.file, shared=True))
            if args.sub_file:
                mounts.add_factory(f"/cam-{i}-sub", factory(args.sub_file, shared=True))
    else:
        mounts.add_factory(args.path, factory(args.file, shared=False))
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    say(f"ready rtsp://127.0.0.1:{args.port}{'' if args.mounts or args.live_pair else args.path}")
    if scene is not None:
        scene.start()
    loop.run()
    if scene is not None:
        scene.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
