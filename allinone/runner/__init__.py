"""The top layer: a Runner built from a run's typed spec (config.RunConfig) owns the models, the run folder, the
gallery and the threshold, and drives one object per input (stages: FilePass, LiveCamera)."""
