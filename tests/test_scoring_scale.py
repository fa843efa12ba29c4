"""kNN scoring at scale (issue 6): chunking over queries and references, and FAISS, against brute force.

"Ties aside": on random float data two neighbours at exactly the same similarity are improbable, but
float32 rounding (~1e-7) can swap two neighbours whose similarities differ by less than that. A row
counts as a tie when the k-th and (k+1)-th brute-force similarities are within 1e-5; such rows are only
checked on their distances; the tests check that they are rare (a few rows in a thousand)."""

import numpy as np
import pytest
import torch

from core import anomaly
from core.anomaly import knn_cosine_scores

TIE = 1e-5


def _brute(q: np.ndarray, r: np.ndarray, k: int, exclude_self: bool = False):
    """float64 cosine similarities, full matrix, stable sort: the reference answer."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    sim = qn.astype(np.float64) @ rn.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")
    top = np.take_along_axis(sim, order[:, : k + 1], 1)
    return order[:, :k], 1.0 - top[:, :k], top


def _assert_same(result, q, r, k, exclude_self=False):
    scores, idx, dist = result
    b_idx, b_dist, b_top = _brute(q, r, k, exclude_self)
    k_eff = idx.shape[1]
    assert k_eff == min(k, len(r) - exclude_self)
    np.testing.assert_allclose(dist, b_dist[:, :k_eff], atol=1e-5)
    np.testing.assert_allclose(scores, b_dist[:, :k_eff].mean(1), atol=1e-5)
    same = (np.sort(idx, 1) == np.sort(b_idx[:, :k_eff], 1)).all(1)
    tie = (b_top[:, k_eff - 1] - b_top[:, k_eff] < TIE) if b_top.shape[1] > k_eff else np.zeros(len(q), bool)
    assert (same | tie).all(), f"{(~same & ~tie).sum()} rows with other neighbours"
    assert tie.mean() < 0.05  # near-ties are rare: almost every row was compared on its neighbours


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # clustered, like embeddings: many close neighbours per query
    centres = rng.standard_normal((20, 16))
    ref = (centres[rng.integers(0, 20, 1500)] + 0.3 * rng.standard_normal((1500, 16))).astype(np.float32)
    query = (centres[rng.integers(0, 20, 121)] + 0.3 * rng.standard_normal((121, 16))).astype(np.float32)
    return query, ref


@pytest.mark.parametrize(
    "chunk,ref_chunk", [(4096, None), (1, 1500), (121, 5), (60, 97), (121, 499), (33, 1499), (1000, 4096)]
)
@pytest.mark.parametrize("k", [1, 5, 12])
def test_chunked_torch_equals_brute_force(data, chunk, ref_chunk, k):
    q, r = data
    _assert_same(knn_cosine_scores(q, r, k=k, chunk=chunk, ref_chunk=ref_chunk, backend="torch"), q, r, k)


@pytest.mark.parametrize("chunk,ref_chunk", [(4096, None), (500, 64), (7, 1000), (999, 9)])
def test_chunked_leave_one_out_equals_brute_force(data, chunk, ref_chunk):
    _, r = data
    res = knn_cosine_scores(r, r, k=5, chunk=chunk, ref_chunk=ref_chunk, exclude_self=True, backend="torch")
    _assert_same(res, r, r, 5, exclude_self=True)
    assert not (res[1] == np.arange(len(r))[:, None]).any()


def test_k_larger_than_reference_and_tiny_chunks():
    rng = np.random.default_rng(1)
    r = rng.standard_normal((6, 8)).astype(np.float32)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    res = knn_cosine_scores(q, r, k=10, chunk=2, ref_chunk=4, backend="torch")
    assert res[1].shape == (5, 6)
    _assert_same(res, q, r, 10)


def test_unchunked_and_chunked_agree_on_torch_tensors():
    torch.manual_seed(0)
    r, q = torch.randn(5000, 32), torch.randn(300, 32)
    whole = knn_cosine_scores(q, r, k=7, ref_chunk=10**9)
    parts = knn_cosine_scores(q, r, k=7, chunk=77, ref_chunk=333)
    assert np.array_equal(whole[1], parts[1])
    np.testing.assert_allclose(whole[2], parts[2], atol=1e-6)


def test_faiss_equals_torch():
    """Runs for real: faiss-cpu is in requirements-dev.txt (CI installs it), so no skip here."""
    import faiss  # noqa: F401 - a missing faiss fails this test instead of skipping it

    rng = np.random.default_rng(2)
    r = rng.standard_normal((30_000, 64)).astype(np.float32)
    q = rng.standard_normal((500, 64)).astype(np.float32)
    t_res = knn_cosine_scores(q, r, k=5, backend="torch", chunk=128, ref_chunk=4096)
    f_res = knn_cosine_scores(q, r, k=5, backend="faiss", chunk=128)
    assert np.array_equal(np.sort(t_res[1], 1), np.sort(f_res[1], 1))
    np.testing.assert_allclose(f_res[2], t_res[2], atol=1e-5)
    np.testing.assert_allclose(f_res[0], t_res[0], atol=1e-5)
    _assert_same(f_res, q, r, 5)


def test_faiss_leave_one_out_and_duplicates():
    import faiss  # noqa: F401 - must be installed (requirements-dev.txt)

    rng = np.random.default_rng(3)
    r = rng.standard_normal((2000, 16)).astype(np.float32)
    r[10:20] = r[10]  # ten identical rows: the query's own row may fall outside the top k+1
    t_res = knn_cosine_scores(r, r, k=5, exclude_self=True, backend="torch")
    f_res = knn_cosine_scores(r, r, k=5, exclude_self=True, backend="faiss")
    np.testing.assert_allclose(f_res[2], t_res[2], atol=1e-5)
    assert not (f_res[1] == np.arange(len(r))[:, None]).any()
    # neighbour sets agree, except that the identical rows 10..19 may stand in for one another (ties)
    dup = set(range(10, 20))
    for a, b in zip(np.sort(t_res[1], 1), np.sort(f_res[1], 1)):
        assert set(a) ^ set(b) <= dup
    assert (f_res[2][10:20] < 1e-5).all()  # the duplicates are each other's neighbours at distance 0


def test_auto_uses_faiss_for_large_reference_sets(monkeypatch):
    import faiss  # noqa: F401

    used = []
    real = anomaly._knn_faiss
    monkeypatch.setattr(anomaly, "_knn_faiss", lambda *a: used.append(len(a[1])) or real(*a))
    rng = np.random.default_rng(4)
    r = rng.standard_normal((400, 8)).astype(np.float32)
    q = rng.standard_normal((10, 8)).astype(np.float32)
    monkeypatch.setattr(anomaly, "FAISS_MIN_REFERENCE", 500)
    knn_cosine_scores(q, r, k=3)
    assert used == []
    monkeypatch.setattr(anomaly, "FAISS_MIN_REFERENCE", 400)
    knn_cosine_scores(q, r, k=3)
    assert used == [400]
    with pytest.raises(ValueError, match="backend"):
        knn_cosine_scores(q, r, backend="annoy")
