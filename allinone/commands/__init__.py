"""The commands (run, rematch, enroll/gallery, extract, evaluate/calibrate, bench, export-onnx, weights): each a thin
layer over the rooms below it."""
