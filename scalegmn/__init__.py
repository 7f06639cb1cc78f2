"""Metanetworks on parameter graphs (ScaleGMN and friends), tasks, training and the CLI.

The graph side lives in the ``converters`` package: ``converters.to_graph(model)``.
"""
__version__ = "0.1.0"
