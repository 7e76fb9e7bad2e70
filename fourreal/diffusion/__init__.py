"""The grid generator (paper §3; design.md §4): models, schedulers, pipelines and the
weight-free ``warp`` method.

Submodules import what they need; nothing heavy is imported here.
"""
