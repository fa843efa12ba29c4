"""core.defaults: settings chosen from the data's size and kind."""

from __future__ import annotations

from core.defaults import DataProfile, suggested_epochs, suggested_settings


def test_epochs_grow_for_small_uploads_and_stay_at_the_floor_for_large_data():
    assert suggested_epochs(3500) == 8  # mnist-5k's training split: the benchmark setting
    assert suggested_epochs(1078) == 25  # 1,797 digits with 6 held out: 9 steps per epoch
    assert suggested_epochs(36000) == 8  # full MNIST, 6 known digits
    assert suggested_epochs(40) == 60  # a tiny upload is capped


def test_uploads_get_a_64d_embedding_and_photos_the_photo_size():
    digits = suggested_settings(DataProfile(n_train=1078, channels=1, image_side=8))
    assert digits == {"dim": 64, "epochs": 25}
    photos = suggested_settings(DataProfile(n_train=300, channels=3, image_side=64, one_class=True))
    assert photos["dim"] == 64 and photos["image_size"] == 224 and photos["epochs"] == 60
    assert photos["method"] == "patch"  # good parts only: the patch memory bank
    classes = suggested_settings(DataProfile(n_train=300, channels=3, image_side=64, one_class=False))
    assert "method" not in classes  # photos of several classes: the trained embedding (metric)
