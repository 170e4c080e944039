"""What the program reads and writes: video sources and sinks, the run folder, model weights, compute devices."""
