"""2-D (and sphere) views of a high-dimensional embedding for the Explore page: projection.npz."""

from __future__ import annotations

import numpy as np

UMAP_NEIGHBOURS = 15


def compute_projection(emb: np.ndarray, which: str, seed: int = 0) -> dict[str, np.ndarray]:
    """2-D views of a >3-D embedding, on the unit sphere's directions (cosine geometry)."""
    from sklearn.decomposition import PCA

    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    out = {"pca": PCA(n_components=2, random_state=seed).fit_transform(unit).astype(np.float32)}
    if which in ("auto", "umap"):
        import umap

        reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_neighbors=UMAP_NEIGHBOURS)
        out["umap"] = reducer.fit_transform(unit).astype(np.float32)
        # The same neighbourhood graph laid out on a sphere (UMAP's haversine output metric), stored as
        # 3-D unit vectors so the Explore page draws it like a 3-D embedding.
        sphere = umap.UMAP(
            n_components=2,
            metric="cosine",
            output_metric="haversine",
            random_state=seed,
            n_neighbors=UMAP_NEIGHBOURS,
        ).fit_transform(unit)
        lat, lon = sphere[:, 0], sphere[:, 1]
        out["umap_sphere"] = np.stack(
            [np.sin(lat) * np.cos(lon), np.sin(lat) * np.sin(lon), np.cos(lat)], axis=1
        ).astype(np.float32)
    # No fitted reducer is saved: it would have to be unpickled later, and run directories may come
    # from elsewhere (model.pt is loaded weights_only for the same reason). New points are placed by
    # their nearest neighbours' coordinates instead, which is how UMAP's transform initialises them.
    return out


def wants_projection(dim: int, projection: str) -> bool:
    """A projection is stored for embeddings of more than 3 dimensions, unless switched off."""
    return dim > 3 and projection != "none"
