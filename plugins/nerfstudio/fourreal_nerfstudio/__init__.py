"""fourreal's nerfstudio plugin: the ``fourreal-grid`` dataparser and ``fourreal-splat`` method.

Install it into its own environment (``make nerfstudio``): nerfstudio pins versions that fourreal's
own environment does not share. Entry points: ``fourreal_nerfstudio.dataparser:fourreal_grid`` and
``fourreal_nerfstudio.method:fourreal_splat``.
"""
