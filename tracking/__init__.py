"""Dense 2D/3D tracking, depth and camera poses (``fourreal.tracking``): pure functions over tensors."""
