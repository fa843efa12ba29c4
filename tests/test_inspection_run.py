"""Run-directory arrays of the training-free methods match the metric runs' embeddings.npz format."""

from types import SimpleNamespace

import numpy as np
import pytest

from core.anomaly import knn_cosine_scores, roc_pr
from core.backbones import EfficientNetLite0Features
from core.inspection_run import training_free_arrays
from core.methods import KnnFeatures
from core.patchcore import PatchCore, PatchCoreConfig, distance_maps_to_images, map_peaks
from core.reference_photos import reference_crops
from core.synthetic_defects import make_inspection_set

SIZE = 64  # backbone input: small, so the test stays quick


@pytest.fixture(scope="module")
def splits():
    """MVTec-like bundle: class 0 'good', class 1 a reference class (in train only), class 2 'defect'."""
    data = make_inspection_set("brick", n_train=16, n_test_good=6, n_test_defect=6, kinds=("spot",))
    ref = reference_crops(4, 64, seed=0).images
    n_val = 4
    train = SimpleNamespace(
        x=np.concatenate([data.train[n_val:], ref]),
        y=np.r_[np.zeros(len(data.train) - n_val, int), np.ones(len(ref), int)],
        anomaly=np.zeros(len(data.train) - n_val + len(ref), bool),
    )
    train.source = [f"train#{i}" for i in range(len(train.y))]
    val = SimpleNamespace(x=data.train[:n_val], y=np.zeros(n_val, int), anomaly=np.zeros(n_val, bool))
    val.source = [f"val#{i}" for i in range(n_val)]
    test = SimpleNamespace(x=data.test, y=np.where(data.test_anomaly, 2, 0), anomaly=data.test_anomaly)
    test.source = [f"test#{i}" for i in range(len(data.test))]
    return train, val, test


@pytest.fixture(scope="module")
def extractor():
    return EfficientNetLite0Features(pretrained=True, image_size=SIZE)


def _check_format(arrays, splits, dim):
    n = sum(len(s.y) for s in splits)
    e = arrays.embeddings
    assert e["emb"].shape == (n, dim) and e["emb"].dtype == np.float32
    assert e["split"].tolist() == [0] * len(splits[0].y) + [1] * len(splits[1].y) + [2] * len(splits[2].y)
    assert e["source"].tolist() == [s for sp in splits for s in sp.source]
    assert e["class_weights"].shape == (0, dim)
    np.testing.assert_allclose(e["norm"], np.linalg.norm(e["emb"], axis=1), rtol=1e-5)
    assert all(a.dtype != object for a in [*e.values(), *arrays.method.values()])


def test_knn_arrays_score_like_core_score(splits, extractor):
    method = KnnFeatures(k=3, image_size=SIZE, device="cpu", extractor=extractor)
    arrays = training_free_arrays(method, *splits, ["good", "ref:photos", "defect"], [0])
    _check_format(arrays, splits, 1280)
    e = arrays.embeddings
    normal_train = (e["split"] == 0) & (e["label"] == 0)
    assert len(method.reference) == normal_train.sum()  # reference-class rows are not in the bank
    test = e["split"] == 2
    # core.score's rule (kNN cosine to the normal training rows) gives the stored test scores
    again = knn_cosine_scores(e["emb"][test], e["emb"][normal_train], k=3)[0]
    np.testing.assert_allclose(e["score"][test], again, rtol=1e-5)
    loo = knn_cosine_scores(e["emb"][normal_train], e["emb"][normal_train], k=3, exclude_self=True)[0]
    np.testing.assert_allclose(e["score"][normal_train], loo, rtol=1e-5)
    assert arrays.patch_maps is None


def test_patch_arrays_with_maps_of_the_test_rows(splits, extractor):
    method = PatchCore(PatchCoreConfig(image_size=SIZE), device="cpu", extractor=extractor)
    arrays = training_free_arrays(method, *splits, ["good", "ref:photos", "defect"], [0])
    _check_format(arrays, splits, 24 + 24 + 40)  # blocks 1, 2 and 4
    e, maps = arrays.embeddings, arrays.patch_maps
    test_rows = np.flatnonzero(e["split"] == 2)
    assert maps["row"].tolist() == test_rows.tolist()
    assert maps["distances"].shape == (len(test_rows), SIZE // 8, SIZE // 8)
    # the stored grids are raw patch distances; each score is the peak of the map drawn from them
    peaks = map_peaks(maps["distances"], int(maps["image_size"]), float(maps["sigma"]))
    np.testing.assert_allclose(e["score"][test_rows], peaks, rtol=1e-6)
    assert roc_pr(e["score"][test_rows], e["anomaly"][test_rows])["auroc"] >= 0.9
    assert distance_maps_to_images(maps["distances"], int(maps["image_size"]), (64, 64)).shape[1:] == (64, 64)
    restored = PatchCore.from_arrays(arrays.method, device="cpu")
    restored._extractor = extractor
    np.testing.assert_allclose(restored.score(splits[2].x), e["score"][test_rows], rtol=1e-5)


def test_too_few_normal_images_is_one_clear_error(splits, extractor):
    train, val, test = splits
    method = KnnFeatures(image_size=SIZE, device="cpu", extractor=extractor)
    with pytest.raises(ValueError, match="at least 2 normal training images"):
        training_free_arrays(method, train, val, test, ["good", "ref", "defect"], normal_classes=[5])
