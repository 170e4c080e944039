"""Who a probe person is: gallery identities, OpenGait distances, the threshold and its evidence, calibration, the
decision rule."""
