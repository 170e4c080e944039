"""The per-video processing: tracking, silhouettes, OpenGait alignment, the per-frame step and track closer, and the
passes over a file or a live stream that call them."""
