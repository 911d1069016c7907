"""Experiment suites that regenerate the paper's comparison through the distributed system."""
