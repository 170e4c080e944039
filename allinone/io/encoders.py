"""Which H.264 encoder writes the videos: NVENC where this process's FFmpeg has it and a GPU opens it, libx264 on
the CPU otherwise. Checked at run time, once per process."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_ENCODERS: dict[str, bool] = {}


def encoder_opens(name: str) -> bool:
    """Whether this process's FFmpeg (PyAV's) has the H.264 encoder ``name`` and it opens here: listed in
    ``av.codecs_available`` is not enough for NVENC, which also needs an NVIDIA GPU and driver, so a tiny trial
    encoder is opened once per process (about a millisecond) and the answer kept."""
    if name not in _ENCODERS:
        import av
        from fractions import Fraction
        ok = name in av.codecs_available
        if ok:
            try:
                ctx = av.CodecContext.create(name, "w")
                ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
                ctx.time_base, ctx.framerate = Fraction(1, 30), Fraction(30)
                ctx.open()  # freed with the object
            except Exception as exc:  # PyAV raises OSError subclasses (PermissionError without a GPU), FFmpegError
                log.debug("%s does not open here (%s)", name, exc)
                ok = False
        _ENCODERS[name] = ok
    return _ENCODERS[name]


def h264_encoder(choice: str = "auto") -> str:
    """The H.264 encoder to use: ``auto`` takes NVENC (``h264_nvenc``) where it opens, else libx264 on the CPU;
    or a name, used as given."""
    if choice != "auto":
        return choice
    return "h264_nvenc" if encoder_opens("h264_nvenc") else "libx264"


__all__ = ["encoder_opens", "h264_encoder"]
