"""allinone: end-to-end video gait recognition (detect, track, segment, align, embed, match, render)."""

__version__ = "0.1.0"
