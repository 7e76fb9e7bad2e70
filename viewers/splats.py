"""Gaussians as the browser gets them: numpy arrays per time step, selection, packing.

viser draws Gaussian splats from one ``uint32 [N, 8]`` buffer per node (its
``GaussianSplatHandle`` documents the layout): words 0-2 the center (float32 x, y, z), word 3
reserved for the renderer, words 4-6 the upper triangle of the 3D covariance (six float16) and
word 7 the color as RGBA bytes. We pack that buffer ourselves, once per time step, so playback
only copies precomputed words into the one splat node (``tests/test_viewer.py`` checks the
layout against viser's own ``add_gaussian_splats``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fourreal.types import GaussianParams

_FLOAT16_MAX = 65504.0


@dataclass
class Splats:
    """Gaussians of one time step, activated, as numpy arrays.

    ``centers [N, 3]`` world units, ``scales [N, 3]`` standard deviations along the Gaussian's
    axes, ``quats [N, 4]`` unit rotations ``(w, x, y, z)``, ``rgbs [N, 3]`` and ``opacities [N]``
    in [0, 1]. Steps of a dynamic scene share every array but ``centers``.
    """

    centers: np.ndarray
    scales: np.ndarray
    quats: np.ndarray
    rgbs: np.ndarray
    opacities: np.ndarray

    @classmethod
    def from_params(cls, gaussians: GaussianParams) -> Splats:
        def numpy(x):
            return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)

        return cls(
            numpy(gaussians.means), numpy(gaussians.scales), numpy(gaussians.quats),
            numpy(gaussians.colors).clip(0, 1), numpy(gaussians.opacities).clip(0, 1),
        )  # fmt: skip

    def __len__(self) -> int:
        return self.centers.shape[0]

    def covariances(self) -> np.ndarray:
        """``[N, 3, 3]`` world covariances ``R diag(s²) Rᵀ``."""
        return covariances(self.scales, self.quats)


def rotation_matrices(quats: np.ndarray) -> np.ndarray:
    """``[N, 3, 3]`` rotation matrices of quaternions ``[N, 4]`` (w, x, y, z; normalized here)."""
    q = quats.astype(np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    w, x, y, z = q.T
    R = np.empty((len(q), 3, 3))
    R[:, 0] = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1)
    R[:, 1] = np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1)
    R[:, 2] = np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)
    return R


def covariances(scales: np.ndarray, quats: np.ndarray) -> np.ndarray:
    """``[N, 3, 3]`` covariances ``R diag(s²) Rᵀ`` of anisotropic Gaussians (float32)."""
    R = rotation_matrices(quats)
    RS = R * scales.astype(np.float64)[:, None, :]  # scales the columns of R
    return np.einsum("nij,nkj->nik", RS, RS).astype(np.float32)


def select(
    opacities: np.ndarray, threshold: float, cap: int, seed: int = 0
) -> tuple[np.ndarray, str | None]:
    """Indices of the Gaussians to send to the browser, and a note when some were dropped.

    Keeps those with opacity ≥ ``threshold``; if more than ``cap`` remain, a uniform random
    subset of ``cap`` (fixed ``seed``, sorted, so every time step of a scene keeps the same
    Gaussians and the choice does not change between runs).
    """
    keep = np.flatnonzero(opacities >= threshold) if threshold > 0 else np.arange(len(opacities))
    notes = []
    if len(keep) < len(opacities):
        notes.append(f"{len(opacities) - len(keep):,} below opacity {threshold:g} hidden")
    if len(keep) > cap:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(keep, size=max(cap, 0), replace=False))
        notes.append(f"subsampled to {len(keep):,} of {len(opacities):,} (max Gaussians {cap:,})")
    return keep, "; ".join(notes) or None


@dataclass
class PackedStep:
    """One time step in viser's buffer layout, split so steps can share what does not move:
    ``centers [M, 3]`` and ``rest [M, 5]`` (reserved word, covariance, RGBA), both uint32."""

    centers: np.ndarray
    rest: np.ndarray

    def buffer(self) -> np.ndarray:
        """The full ``uint32 [M, 8]`` buffer of a splat node."""
        out = np.empty((len(self.centers), 8), dtype=np.uint32)
        out[:, :3] = self.centers
        out[:, 3:] = self.rest
        return out


def pack_centers(centers: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(centers, dtype=np.float32).view(np.uint32)


def pack_rest(splats: Splats, index: np.ndarray) -> np.ndarray:
    """The words after the center, for the Gaussians ``index`` of ``splats``."""
    cov = covariances(splats.scales[index], splats.quats[index])
    triu = cov.reshape(-1, 9)[:, [0, 1, 2, 4, 5, 8]].clip(-_FLOAT16_MAX, _FLOAT16_MAX)
    rgba = np.empty((len(index), 4), dtype=np.uint8)
    rgba[:, :3] = np.round(splats.rgbs[index] * 255).clip(0, 255)
    rgba[:, 3] = np.round(splats.opacities[index] * 255).clip(0, 255)
    rest = np.zeros((len(index), 5), dtype=np.uint32)
    rest[:, 1:4] = np.ascontiguousarray(triu.astype(np.float16)).view(np.uint32)
    rest[:, 4] = rgba.view(np.uint32)[:, 0]
    return rest


def pack_steps(steps: list[Splats], threshold: float, cap: int) -> tuple[list[PackedStep], str]:
    """Select and pack every step; returns the packed steps and a note on what is shown.

    Steps that share their non-center arrays with the step before (a dynamic scene) share the
    packed ``rest`` too, so the per-step cost is the centers only.
    """
    packed: list[PackedStep] = []
    notes: set[str] = set()
    previous: tuple[Splats, np.ndarray, np.ndarray] | None = None
    for splats in steps:
        if previous is not None and _same_except_centers(previous[0], splats):
            _, index, rest = previous
        else:
            index, note = select(splats.opacities, threshold, cap)
            if note:
                notes.add(note)
            rest = pack_rest(splats, index)
        packed.append(PackedStep(pack_centers(splats.centers[index]), rest))
        previous = (splats, index, rest)
    counts = sorted({len(p.centers) for p in packed})
    shown = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,}"
    return packed, f"showing {shown} Gaussians" + "".join(f"; {n}" for n in sorted(notes))


def _same_except_centers(a: Splats, b: Splats) -> bool:
    return all(
        getattr(a, name) is getattr(b, name) for name in ("scales", "quats", "rgbs", "opacities")
    )
