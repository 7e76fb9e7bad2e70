"""The browser viewer (``fourreal.viewers``), on viser.

- ``sources``: what ``fourreal view`` opens (scene folders, 3DGS PLYs, per-time PLY folders and
  zips, grids), loaded and checked into a :class:`~fourreal.viewers.sources.ViewScene`;
- ``splats``: Gaussians as numpy arrays per time step, selection and packing for viser;
- ``cameras``: camera presets, framing, the up direction;
- ``server`` and ``gui``: the running viewer (viser is imported only there).
"""
