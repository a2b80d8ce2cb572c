import logging
import os
import shutil

import pytest
import torch
from sightline.training.config import AugmentConfig
from sightline.training.data import (
    SkipLog,
    TrainImages,
    balanced_class_weights,
    collate_train,
    imbalance_warning,
    scan_dataset,
    train_transform,
)
from sightline.training.errors import DatasetError
from torch.utils.data import DataLoader


def test_train_and_val_folders_give_classes_from_folder_names(dataset_factory):
    root = dataset_factory(n_train=3, n_val=2, classes=("rocket", "coffee"))
    split = scan_dataset(root, val_split=0.2, seed=0)
    assert split.class_names == ["coffee", "rocket"]
    assert (split.train_counts(), split.val_counts()) == ([3, 3], [2, 2])
    assert split.val_source == str(root / "val")


def test_missing_train_folder(tmp_path):
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no train/ folder"):
        scan_dataset(tmp_path, 0.2, 0)


def test_empty_class_folders_are_all_named(dataset_factory):
    root = dataset_factory(n_train=2, classes=("rocket", "coffee"))
    (root / "train" / "empty_a").mkdir()
    (root / "train" / "empty_b").mkdir()
    (root / "train" / "empty_b" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="no images .*: empty_a, empty_b"):
        scan_dataset(root, 0.2, 0)


def test_train_and_val_class_sets_that_differ_list_both_sides(dataset_factory):
    root = dataset_factory(n_train=2, n_val=1, classes=("rocket", "coffee", "chelsea"))
    shutil.rmtree(root / "val" / "chelsea")
    shutil.copytree(root / "val" / "coffee", root / "val" / "astronaut")
    with pytest.raises(DatasetError, match=r"only in train/: chelsea; only in val/: astronaut"):
        scan_dataset(root, 0.2, 0)


def test_fewer_than_two_classes(dataset_factory):
    root = dataset_factory(n_train=4, classes=("rocket",))
    with pytest.raises(DatasetError, match=r"found 1 class folder\(s\) \(rocket\); need at least 2"):
        scan_dataset(root, 0.2, 0)


def test_stratified_split_keeps_each_class_share_and_is_seeded(dataset_factory):
    root = dataset_factory(n_train=(10, 5), classes=("rocket", "coffee"))
    split = scan_dataset(root, val_split=0.2, seed=3)
    assert split.val_counts() == [1, 2]  # coffee 5 -> 1, rocket 10 -> 2
    assert split.train_counts() == [4, 8]
    assert not set(split.train) & set(split.val)
    assert scan_dataset(root, val_split=0.2, seed=3).val == split.val
    assert scan_dataset(root, val_split=0.2, seed=4).val != split.val


def test_split_needs_two_images_per_class(dataset_factory):
    root = dataset_factory(n_train=(3, 1), classes=("rocket", "coffee"))
    with pytest.raises(DatasetError, match=r"fewer than 2 images: coffee \(1\)"):
        scan_dataset(root, 0.2, 0)


def test_corrupt_and_truncated_images_are_skipped_and_counted(dataset_factory, caplog):
    root = dataset_factory(n_train=3, classes=("rocket", "coffee"))
    (root / "train" / "coffee" / "garbage.jpg").write_bytes(b"definitely not a jpeg")
    good = (root / "train" / "rocket" / "001.jpg").read_bytes()
    (root / "train" / "rocket" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    split = scan_dataset(root, 0.2, 0)
    dataset = TrainImages(split.train + split.val, train_transform(32, AugmentConfig()))
    skips = SkipLog(logging.getLogger("sightline.training").warning)
    seen = 0
    with caplog.at_level(logging.WARNING, logger="sightline.training"):
        for _ in range(2):  # a second epoch meets the same files: counted once
            for batch in DataLoader(dataset, batch_size=4, collate_fn=collate_train):
                skips.record(batch.skipped)
                seen += len(batch)
                assert batch.images.shape[1:] == (3, 32, 32) and batch.images.dtype == torch.uint8
    assert skips.count == 2
    assert sorted(p.rsplit("/", 1)[1] for p in skips.files) == ["garbage.jpg", "truncated.jpg"]
    assert seen == 2 * 6
    assert sum("skipping unreadable image" in r.message for r in caplog.records) == 2


def test_imbalance_is_reported_with_advice():
    msg = imbalance_warning(["cat", "dog"], [40, 10], "none")
    assert msg == "class imbalance: cat has 40 training images, dog has 10 (4.0x); consider class_weighting: balanced"
    assert imbalance_warning(["cat", "dog"], [11, 10], "none") is None


def test_balanced_weights_favour_the_rare_class():
    w = balanced_class_weights([30, 10])
    assert torch.allclose(w, torch.tensor([40 / 60, 40 / 20]))
    assert torch.allclose(balanced_class_weights([5, 5, 5]), torch.ones(3))


def test_trivial_augment_keeps_uint8_crops():
    aug = train_transform(24, AugmentConfig(trivial_augment=True))
    torch.manual_seed(0)
    out = [aug(torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)) for _ in range(8)]
    assert all(o.shape == (3, 24, 24) and o.dtype == torch.uint8 for o in out)


# -- links (issue #23 item 12): loops, the same real image twice, train/val leakage --------------------------


def _pngs(folder, n, start=0):
    """n tiny PNGs of different colours (the content does not matter to the scan, only the files)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.new("RGB", (4, 4), (i * 7 % 256, 0, 0)).save(folder / f"{i:03d}.png")


def _real(samples):
    return {os.path.realpath(s.path) for s in samples}


@pytest.fixture
def walk_budget(monkeypatch):
    """Fail (not hang) a scan that opens more folders than a small dataset has: old code walked loops on."""
    calls = {"n": 0}
    real_scandir = os.scandir

    def counted(path="."):
        calls["n"] += 1
        if calls["n"] > 200:
            pytest.fail("the scan opened more than 200 folders: it follows a link loop")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counted)
    return calls


def test_a_link_loop_is_skipped_and_each_image_counts_once(tmp_path, walk_budget, caplog):
    _pngs(tmp_path / "train" / "cat", 4)
    _pngs(tmp_path / "train" / "dog", 4)
    (tmp_path / "train" / "cat" / "again").symlink_to(".", target_is_directory=True)  # cat/again/again/...
    with caplog.at_level(logging.WARNING, logger="sightline.training.data"):
        split = scan_dataset(tmp_path, val_split=0.25, seed=0)
    assert split.train_counts() == [3, 3] and split.val_counts() == [1, 1]  # not 41 copies of each
    assert not _real(split.train) & _real(split.val)
    assert "again" in caplog.text and "loop" in caplog.text


def test_two_link_loops_do_not_hang_the_scan(tmp_path, walk_budget):
    _pngs(tmp_path / "train" / "cat", 3)
    _pngs(tmp_path / "train" / "dog", 3)
    cat = tmp_path / "train" / "cat"
    (cat / "sub").mkdir()
    (cat / "sub" / "up").symlink_to("..", target_is_directory=True)  # to cat/
    (cat / "root").symlink_to("../..", target_is_directory=True)  # to the dataset root
    split = scan_dataset(tmp_path, val_split=0.34, seed=0)
    assert [a + b for a, b in zip(split.train_counts(), split.val_counts(), strict=True)] == [3, 3]
    assert walk_budget["n"] < 20


def test_the_same_real_image_through_several_links_counts_once(tmp_path, walk_budget):
    store = tmp_path / "store"
    _pngs(store / "cats", 5)
    _pngs(tmp_path / "data" / "train" / "dog", 5)
    cat = tmp_path / "data" / "train" / "cat"
    cat.mkdir()
    (cat / "a").symlink_to(store / "cats", target_is_directory=True)
    (cat / "b").symlink_to(store / "cats", target_is_directory=True)  # the same folder twice
    (cat / "c.png").symlink_to(store / "cats" / "000.png")  # a linked file
    os.link(store / "cats" / "001.png", cat / "d.png")  # a hard link
    split = scan_dataset(tmp_path / "data", val_split=0.2, seed=0)
    assert [a + b for a, b in zip(split.train_counts(), split.val_counts(), strict=True)] == [5, 5]
    assert not _real(split.train) & _real(split.val)  # the split cannot put one image on both sides


def test_an_image_linked_into_both_train_and_val_is_refused(tmp_path):
    _pngs(tmp_path / "train" / "cat", 3)
    _pngs(tmp_path / "train" / "dog", 3)
    _pngs(tmp_path / "val" / "cat", 1, start=10)
    _pngs(tmp_path / "val" / "dog", 1, start=10)
    (tmp_path / "val" / "cat" / "more").symlink_to(tmp_path / "train" / "cat", target_is_directory=True)
    with pytest.raises(DatasetError) as info:
        scan_dataset(tmp_path, 0.2, 0)
    message = str(info.value)
    assert "\n" not in message
    assert "3 image(s) are in both train/ and val/" in message
    assert f"{tmp_path}/train/cat/000.png = {tmp_path}/val/cat/more/000.png" in message


def test_val_as_a_link_to_train_is_refused(tmp_path):
    _pngs(tmp_path / "train" / "cat", 2)
    _pngs(tmp_path / "train" / "dog", 2)
    (tmp_path / "val").symlink_to("train", target_is_directory=True)
    with pytest.raises(DatasetError, match=r"4 image\(s\) are in both train/ and val/"):
        scan_dataset(tmp_path, 0.2, 0)


def test_an_image_linked_into_two_classes_is_refused(tmp_path):
    _pngs(tmp_path / "train" / "cat", 3)
    _pngs(tmp_path / "train" / "dog", 3)
    (tmp_path / "train" / "dog" / "odd.png").symlink_to(tmp_path / "train" / "cat" / "001.png")
    with pytest.raises(DatasetError, match=r"1 image\(s\) are in two classes .*: "
                                           r".*train/cat/001\.png = .*train/dog/odd\.png; keep each"):
        scan_dataset(tmp_path, 0.2, 0)
