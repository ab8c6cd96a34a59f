"""Evaluation: the NAB scorer, loaders for the real data sets, peers and the Stanford evaluation."""
