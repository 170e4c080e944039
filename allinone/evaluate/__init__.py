"""Evaluating a gait checkpoint on a dataset in OpenGait's layout: OpenGait's closed-set protocols (numbers equal
to its evaluator), open-set error rates, plots, and threshold calibration.

dataset.py   the sequences of a partition's TEST_SET, in OpenGait's order
embed.py     embeddings with a resumable cache keyed by checkpoint and file
protocols.py OpenGait's protocols (casia-b, oumvlp, casia-e, sustech1k, gait3d, ccpg, grew) and custom ones
openset.py   TAR@FAR, EER, FNIR@FPIR
plots.py     CMC, ROC, distance histograms
command.py   python main.py evaluate / calibrate
"""
