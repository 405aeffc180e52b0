"""Experiments as commands: the comparisons of the papers, run through the bundles' own configs."""
