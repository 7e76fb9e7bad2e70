"""Dense 2D/3D tracking, depth and camera poses (``fourreal.tracking``).

Pure functions over tensors; file I/O stays in ``fourreal.io``.
"""
