import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from privsplit.data import DataConfig, load_dataset
from privsplit.data.utkface import parse_name
from privsplit.errors import ConfigError, DataError


def test_digits_default_is_real_and_offline():
    train, test, info = load_dataset(DataConfig())
    assert len(train) + len(test) == 1797
    x, y = train[0]
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(train.labels["utility"], train.labels["private"] % 2)
    assert info.labels["utility"] == ["even", "odd"] and info.num_classes("private") == 10
    with pytest.raises(ConfigError, match="valid targets: utility, private"):
        info.num_classes("age")


def test_seeded_split_is_reproducible():
    a, _, _ = load_dataset(DataConfig(split_seed=1))
    b, _, _ = load_dataset(DataConfig(split_seed=1))
    c, _, _ = load_dataset(DataConfig(split_seed=2))
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def _write_batches(root, n=4):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
    return d


def test_cifar10_official_batches_layout(tmp_path):
    _write_batches(tmp_path)
    train, test, info = load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    assert len(train) == 20 and len(test) == 4
    assert train.labels["private"][:4].tolist() == [0, 1, 2, 3]
    assert train.labels["utility"][:4].tolist() == [0, 0, 1, 1]  # airplane, automobile, bird, cat
    assert info.labels["utility"] == ["non-living", "living"]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_batch_that_would_run_code_is_refused(tmp_path):
    d = _write_batches(tmp_path)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({"data": _Evil(), "labels": [0]}, f)
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))


def test_cifar10_image_folder_layout(tmp_path):
    from privsplit.data.cifar10 import CLASSES

    for split in ("train", "test"):
        for i, c in enumerate(CLASSES):
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(np.full((32, 32, 3), i * 20, np.uint8)).save(tmp_path / split / c / "0.png")
    train, test, _ = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), image_size=16))
    assert len(train) == 10 and train[3][0].shape == (3, 16, 16)
    assert train.labels["private"].tolist() == list(range(10))
    assert abs(train[3][0].mean().item() - 60 / 255) < 1e-3


def test_missing_or_wrong_data_folders_say_what_is_expected(tmp_path):
    with pytest.raises(DataError, match="needs its data folder: set data.root"):
        load_dataset(DataConfig(name="cifar10"))
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    with pytest.raises(DataError, match="list_attr_celeba.txt"):
        load_dataset(DataConfig(name="celeba", root=str(tmp_path)))
    with pytest.raises(DataError, match="fairface_label_train.csv"):
        load_dataset(DataConfig(name="fairface", root=str(tmp_path)))
    with pytest.raises(DataError, match="UTKFace"):
        load_dataset(DataConfig(name="utkface", root=str(tmp_path)))
    with pytest.raises(ConfigError, match="valid choices: celeba, cifar10, digits, fairface, utkface"):
        load_dataset(DataConfig(name="mnist"))


def _face(path, w=20, h=24, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def test_celeba_layout(tmp_path):
    root = tmp_path / "celeba"
    names = [f"{i:06d}.jpg" for i in range(1, 5)]
    for n in names:
        _face(root / "img_align_celeba" / n, 20, 24)
    attrs = ["5_o_Clock_Shadow", "Male", "Smiling"]
    rows = ["4", " ".join(attrs)] + [f"{n} -1 {1 if i % 2 else -1} {1 if i < 2 else -1}" for i, n in enumerate(names)]
    (root / "list_attr_celeba.txt").write_text("\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(f"{n} {[0, 0, 1, 2][i]}" for i, n in enumerate(names)) + "\n")
    train, test, info = load_dataset(DataConfig(name="celeba", root=str(tmp_path), image_size=16))
    assert len(train) == 2 and len(test) == 1
    assert train.labels["utility"].tolist() == [1, 1] and train.labels["private"].tolist() == [0, 1]
    assert test.labels["private"].tolist() == [1] and test.labels["utility"].tolist() == [0]
    assert train[0][0].shape == (3, 16, 16)
    assert info.labels["private"] == ["female", "male"]


def test_fairface_layout(tmp_path):
    _face(tmp_path / "train" / "1.jpg")
    _face(tmp_path / "train" / "2.jpg")
    _face(tmp_path / "val" / "1.jpg")
    (tmp_path / "fairface_label_train.csv").write_text(
        "file,age,gender,race,service_test\ntrain/1.jpg,50-59,Male,East Asian,True\ntrain/2.jpg,20-29,Female,Indian,False\n"
    )
    (tmp_path / "fairface_label_val.csv").write_text("file,age,gender,race,service_test\nval/1.jpg,3-9,Female,White,False\n")
    train, test, info = load_dataset(DataConfig(name="fairface", root=str(tmp_path), image_size=12))
    assert train.labels["utility"].tolist() == [0, 1]
    assert [info.labels["private"][i] for i in train.labels["private"]] == ["East Asian", "Indian"]
    assert test[0][0].shape == (3, 12, 12)
    (tmp_path / "fairface_label_val.csv").write_text("file,age,gender,race\nval/1.jpg,3-9,Female,Martian\n")
    with pytest.raises(DataError, match="line 2"):
        load_dataset(DataConfig(name="fairface", root=str(tmp_path)))


def test_utkface_names_and_malformed_files(tmp_path):
    assert parse_name("26_1_2_20170116174525125.jpg.chip.jpg") == (1, 2)
    assert parse_name("39_1_20170116174525125.jpg.chip.jpg") is None
    d = tmp_path / "UTKFace"
    for i in range(10):
        _face(d / f"{20 + i}_{i % 2}_{i % 5}_2017011617452{i}.jpg.chip.jpg")
    _face(d / "39_1_20170116174525125.jpg.chip.jpg")
    with pytest.warns(UserWarning, match="skipped 1 UTKFace"):
        train, test, _ = load_dataset(DataConfig(name="utkface", root=str(tmp_path), image_size=16, test_fraction=0.3))
    assert len(train) == 7 and len(test) == 3


@pytest.mark.slow
def test_real_cifar10_folder(cifar_root):
    train, test, _ = load_dataset(DataConfig(name="cifar10", root=str(cifar_root), limit_test=1000))
    assert len(train) == 50000 and len(test) == 1000
    assert torch.bincount(train.labels["private"]).tolist() == [5000] * 10
    assert train.labels["utility"].float().mean().item() == pytest.approx(0.6)


def test_limits_take_a_seeded_random_subset_not_the_first_class(tmp_path):
    from privsplit.data.cifar10 import CLASSES

    for split in ("train", "test"):
        for i, c in enumerate(CLASSES):
            (tmp_path / split / c).mkdir(parents=True)
            for j in range(3):
                Image.fromarray(np.full((32, 32, 3), i * 20, np.uint8)).save(tmp_path / split / c / f"{j}.png")
    cfg = DataConfig(name="cifar10", root=str(tmp_path), limit_train=12, limit_test=6)
    train, test, _ = load_dataset(cfg)
    assert len(train) == 12 and len(test) == 6
    assert len(set(train.labels["private"].tolist())) > 3  # sorted-by-class folders would give 1 or 2 classes
    again, _, _ = load_dataset(cfg)
    assert torch.equal(train.labels["private"], again.labels["private"])


def test_file_backed_set_decodes_once_then_serves_from_memory(tmp_path):
    from privsplit.train.batching import batches

    d = tmp_path / "UTKFace"
    for i in range(10):
        _face(d / f"{20 + i}_{i % 2}_{i % 5}_2017011617452{i}.jpg.chip.jpg", value=10 * i)
    cfg = DataConfig(name="utkface", root=str(tmp_path), image_size=16, test_fraction=0.3)
    kept, _, _ = load_dataset(cfg)
    fresh, _, _ = load_dataset(DataConfig(**{**cfg.__dict__, "cache_gb": 0.0}))
    assert kept.images is None and kept.paths is not None  # nothing decoded before the first pass
    order = torch.randperm(len(kept))
    first = torch.cat([x for x, _ in batches(kept, order, 3)])
    assert kept.images is not None and kept.images.dtype == torch.uint8  # every image decoded once: in memory now
    for path in kept.paths:
        path.unlink()  # a second pass reads no file
    second = torch.cat([x for x, _ in batches(kept, order, 3)])
    assert torch.equal(first, second)
    assert fresh.images is None  # cache_gb=0 keeps decoding from files
    with pytest.raises(DataError, match="cannot decode image"):
        fresh[0]
