"""A real RTSP server for the live-stream tests: GStreamer's RTSP server (gst-rtsp-server) on the loopback,
serving an H.264 MPEG-TS file (made by ffmpeg) at rtsp://127.0.0.1:PORT/MOUNT, paced in real time.

Run with the system Python that has GStreamer's introspection bindings (python3-gi):
    /usr/bin/python3 tests/servers/rtsp_server.py PORT MOUNT FILE.ts
It prints "ready" once it listens, and serves until killed.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, mount, media = sys.argv[1], sys.argv[2], sys.argv[3]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f"( filesrc location={media} ! tsdemux ! h264parse ! rtph264pay name=pay0 pt=96 "
                   "config-interval=1 )")
factory.set_shared(True)
server.get_mount_points().add_factory(f"/{mount}", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print("ready", flush=True)
GLib.MainLoop().run()
