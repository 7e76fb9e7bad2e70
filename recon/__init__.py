"""4D reconstruction (``fourreal.recon``): Gaussians, rendering backends, deformation, fitting."""
