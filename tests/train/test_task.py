"""The labelled task (splits, model selection inputs, baselines), augmentation, BatchNorm
calibration, image folders and the benchmark layouts (CUB-200-2011, Cars196, SOP) on tiny
synthetic copies, and torchvision backbones (without torchvision: the error; with a stand-in
module: the code path)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pairloss.data.benchmarks import cars196_files, cub200_files, sop_files
from pairloss.data.images import ImageFiles
from pairloss.errors import PairLossError
from pairloss.train import make_config
from pairloss.train.augment import ImageAugment, parse_augment
from pairloss.train.evaluate import calibrate_batchnorm
from pairloss.train.labelled import per_class_split
from pairloss.train.tasks import load_task

TINY = {"epochs": 1, "batches_per_epoch": 1, "p": 2, "k": 2, "embedding_size": 4, "threads": 1}


def _png(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _pixels(seed: int, h: int = 10, w: int = 8, colour: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if colour else (h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


# ------------------------------------------------------------------------------------- splits


def test_per_class_split_is_seeded_disjoint_and_keeps_small_classes():
    labels = torch.tensor([0] * 10 + [1] * 20 + [2] * 3)
    kept, carved = per_class_split(labels, 0.2, seed=3)
    assert torch.equal(torch.cat([kept, carved]).sort().values, torch.arange(33))
    assert (labels[carved] == 0).sum() == 2 and (labels[carved] == 1).sum() == 4
    assert (labels[carved] == 2).sum() == 0  # 3 samples: carving 2 would leave 1
    again = per_class_split(labels, 0.2, seed=3)
    assert torch.equal(again[1], carved) and not torch.equal(
        per_class_split(labels, 0.2, 4)[1], carved
    )


def test_digits_task_splits_never_overlap_and_unseen_classes_stay_unseen(tmp_path):
    config = make_config(dataset="digits", out=str(tmp_path), train_classes=6, **TINY)
    task = load_task(config)
    assert task.num_classes == 6 and int(task.train_y.max()) == 5
    train = {tuple(row.tolist()) for row in task.train_x}
    val = {tuple(row.tolist()) for row in task.val_x}
    seen_x, seen_y = task.eval_sets["seen"]
    unseen_x, unseen_y = task.eval_sets["unseen"]
    assert not train & val and not train & {tuple(r.tolist()) for r in seen_x}
    assert set(seen_y.tolist()) == set(range(6)) and set(unseen_y.tolist()) == {6, 7, 8, 9}
    assert set(task.val_y.tolist()) <= set(range(6))
    total = len(task.train_y) + len(task.val_y) + len(seen_y) + len(unseen_y)
    assert total == 1797
    assert task.headline == "seen"


def test_every_class_in_training_leaves_only_the_seen_setting(tmp_path):
    config = make_config(dataset="digits", out=str(tmp_path), train_classes=10, **TINY)
    task = load_task(config)
    assert set(task.eval_sets) == {"seen"} and task.num_classes == 10
    with pytest.raises(PairLossError, match="no test samples"):
        load_task(config.replace(test_fraction=0.0))
    with pytest.raises(PairLossError, match="give one of the two"):
        load_task(config.replace(held_out=3))
    held = load_task(config.replace(train_classes=None, held_out=3))
    assert held.num_classes == 7


def test_fashion_mnist_uses_its_official_test_split(tmp_path):
    config = make_config(dataset="fashion-mnist", out=str(tmp_path), max_eval=0, **TINY)
    task = load_task(config)
    assert task.num_classes == 8
    assert len(task.eval_sets["seen"][1]) == 8000 and len(task.eval_sets["unseen"][1]) == 2000
    assert len(task.train_y) + len(task.val_y) == 48000
    with pytest.raises(PairLossError, match="does not use it"):
        from pairloss.train.tasks import check_applies

        check_applies(config.replace(test_fraction=0.1))


# ------------------------------------------------------------------------------ augmentation


def test_augmentation_is_reproducible_per_step_and_flips_exactly():
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    flip = ImageAugment("flip", seed=1)
    out = flip(images, step=5)
    unit = images.float() / 255
    for i in range(6):
        assert torch.allclose(out[i], unit[i], atol=1e-6) or torch.allclose(
            out[i], unit[i].flip(-1), atol=1e-6
        )
    assert torch.equal(out, flip(images, step=5))
    crop = ImageAugment("flip,crop,jitter", seed=1)
    a, b = crop(images, 5), crop(images, 6)
    assert a.shape == (6, 1, 8, 8) and not torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert ImageAugment("none")(images, 0).dtype == torch.float32
    assert parse_augment("none") == () and parse_augment("crop, flip") == ("crop", "flip")
    for bad in ("blur", "flip,flip", "", 3):
        with pytest.raises(PairLossError, match="augment"):
            parse_augment(bad)


def test_batchnorm_calibration_uses_the_batches_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    batches = [torch.randn(16, 3) * 5 + 2 for _ in range(3)]
    assert calibrate_batchnorm(model, batches) == 1
    with torch.no_grad():
        features = torch.cat([model[0](b) for b in batches])
    bn = model[1]
    assert bn.momentum == 0.1  # restored
    means = torch.stack([model[0](b).mean(0) for b in batches]).mean(0).detach()
    torch.testing.assert_close(bn.running_mean, means)
    assert features.shape == (48, 4)


# ------------------------------------------------------------------------------ image data


def test_image_folder_with_mixed_sizes_is_resized_and_face_protocol_applies(tmp_path):
    for c in range(4):
        for i in range(5):
            size = (10, 8) if i % 2 else (12, 9)
            _png(tmp_path / f"person{c}" / f"{i}.png", _pixels(10 * c + i, *size))
    config = make_config(
        dataset="folder",
        data_dir=str(tmp_path),
        protocol="face",
        train_classes=2,
        out=str(tmp_path / "run"),
        image_size=[8, 8],
        **TINY,
    )
    task = load_task(config)
    assert task.protocol == "face" and task.train_x.shape == (6, 1, 8, 8)
    assert isinstance(task.train_x, ImageFiles)
    model = task.build_model(config)
    results = task.evaluate(model, "test", torch.device("cpu"))
    assert "eer" in results["unseen"] and "rank1" in results["unseen"]


def test_image_files_decode_lazily_and_cache(tmp_path):
    paths = [_png(tmp_path / f"{i}.png", _pixels(i, colour=True)) for i in range(3)]
    files = ImageFiles(paths, (4, 6), "rgb", workers=2)
    batch = files[[2, 0]]
    assert batch.shape == (2, 3, 4, 6) and batch.dtype == torch.uint8
    assert torch.equal(files[0], batch[1]) and len(files._cache) == 2
    assert files[torch.tensor([1])].shape == (1, 3, 4, 6) and files[:].shape == (3, 3, 4, 6)
    with pytest.raises(PairLossError, match="index"):
        files[[5]]
    paths[1].write_bytes(b"broken")
    with pytest.raises(PairLossError, match=str(paths[1])):
        ImageFiles(paths, (4, 6))[[1]]


def _cub(root: Path, per_class: int = 2) -> Path:
    base = root / "CUB_200_2011"
    lines, labels = [], []
    image_id = 0
    for c in (1, 2, 101, 102):
        for i in range(per_class):
            image_id += 1
            rel = f"{c:03d}.Bird_{c}/Bird_{c}_{i}.jpg"
            _png(base / "images" / rel, _pixels(image_id, colour=True))
            lines.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
    (base / "images.txt").write_text("\n".join(lines) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    return root


def test_cub200_layout_standard_split_and_errors(tmp_path):
    files = cub200_files(_cub(tmp_path, per_class=3))
    assert files.labels.tolist() == [1, 1, 1, 2, 2, 2, 101, 101, 101, 102, 102, 102]
    assert files.train_classes == list(range(1, 101)) and files.class_names[2] == "002.Bird_2"
    assert cub200_files(tmp_path / "CUB_200_2011").paths == files.paths
    config = make_config(
        dataset="cub200",
        data_dir=str(tmp_path),
        model="face",
        image_size=[16, 16],
        out=str(tmp_path / "run"),
        **TINY,
    )
    task = load_task(config)
    assert task.num_classes == 2 and set(task.eval_sets) == {"unseen"}
    assert task.train_x.shape[1:] == (3, 16, 16) and task.pretrained is None
    labels_file = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    labels_file.write_text(labels_file.read_text().replace("5 2\n", "5 two\n"))
    with pytest.raises(PairLossError, match=r"image_class_labels.txt: line 5: class id 'two'"):
        cub200_files(tmp_path)
    labels_file.write_text("1 1\n")
    with pytest.raises(PairLossError, match="no class for image id 2"):
        cub200_files(tmp_path)
    with pytest.raises(PairLossError, match="neither images.txt"):
        cub200_files(tmp_path / "elsewhere")


def test_cars196_both_layouts(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")  # scipy comes with scikit-learn (test extra)
    mat_root = tmp_path / "mat"
    records = []
    for i, c in enumerate((1, 1, 98, 99, 99, 196)):
        _png(mat_root / "car_ims" / f"{i:06d}.jpg", _pixels(i, colour=True))
        records.append((f"car_ims/{i:06d}.jpg", 0, 0, 5, 5, c, i % 2))
    dtype = [
        ("relative_im_path", "O"),
        ("bbox_x1", "O"),
        ("bbox_y1", "O"),
        ("bbox_x2", "O"),
        ("bbox_y2", "O"),
        ("class", "O"),
        ("test", "O"),
    ]
    scipy_io.savemat(mat_root / "cars_annos.mat", {"annotations": np.array(records, dtype=dtype)})
    files = cars196_files(mat_root)
    assert files.labels.tolist() == [1, 1, 98, 99, 99, 196] and files.train_classes == list(
        range(1, 99)
    )
    assert files.paths[2] == mat_root / "car_ims" / "000002.jpg"
    (mat_root / "cars_annos.mat").write_bytes(b"not a mat file")
    with pytest.raises(PairLossError, match="cars_annos.mat: cannot read"):
        cars196_files(mat_root)

    csv_root = tmp_path / "csv"
    (csv_root).mkdir()
    cars = csv_root / "car_data" / "car_data"
    for split, name, folder in (
        ("train", "00001", "AM General Hummer"),
        ("train", "00002", "Acura-RL"),
    ):
        _png(cars / split / folder / f"{name}.jpg", _pixels(0, colour=True))
    _png(cars / "test" / "Acura-RL" / "00003.jpg", _pixels(0, colour=True))
    (csv_root / "names.csv").write_text("AM General Hummer\nAcura/RL\n")
    (csv_root / "anno_train.csv").write_text("00001.jpg,1,2,3,4,1\n00002.jpg,1,2,3,4,2\n")
    (csv_root / "anno_test.csv").write_text("00003.jpg,1,2,3,4,2\n")
    files = cars196_files(csv_root)
    assert files.labels.tolist() == [1, 2, 2] and files.class_names[2] == "Acura/RL"
    assert files.paths[1] == csv_root / "car_data" / "car_data" / "train" / "Acura-RL" / "00002.jpg"
    (csv_root / "anno_test.csv").write_text("00003.jpg,1,2,3,4,7\n")
    with pytest.raises(PairLossError, match=r"anno_test.csv: line 1: class 7 is not in 1-2"):
        cars196_files(csv_root)


def test_sop_layout_and_errors(tmp_path):
    base = tmp_path / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path\n"
    rows = {"train": [(1, 1), (2, 1), (3, 2), (4, 2)], "test": [(5, 3), (6, 3)]}
    for split, items in rows.items():
        for i, _ in items:
            _png(base / "bicycle_final" / f"{i}.JPG", _pixels(i, colour=True))
        text = header + "".join(f"{i} {c} 1 bicycle_final/{i}.JPG\n" for i, c in items)
        (base).mkdir(exist_ok=True)
        (base / f"Ebay_{split}.txt").write_text(text)
    files = sop_files(tmp_path)
    assert files.labels.tolist() == [1, 1, 2, 2, 3, 3] and files.train_classes == [1, 2]
    assert files.paths[0] == base / "bicycle_final" / "1.JPG"
    (base / "Ebay_test.txt").write_text(header + "7 3 1 ../../etc/passwd\n")
    with pytest.raises(PairLossError, match="leaves the data set's folder"):
        sop_files(tmp_path)
    (base / "Ebay_test.txt").write_text(header + "7 3 1 bicycle_final/7.JPG\n")
    with pytest.raises(
        PairLossError, match=r"Ebay_test.txt: line 2: the image .*7.JPG does not exist"
    ):
        sop_files(tmp_path)
    (base / "Ebay_test.txt").write_text("id class path\n")
    with pytest.raises(PairLossError, match="Ebay_test.txt: expected the header line"):
        sop_files(tmp_path)


# ------------------------------------------------------------------------------ torchvision


def test_torchvision_model_without_torchvision_says_how_to_install(monkeypatch):
    from pairloss.train.models import build_model

    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(PairLossError, match="need torchvision, which is not installed"):
        build_model("torchvision:resnet18", 8)


class _TinyNet(nn.Module):
    """Stands in for a torchvision classifier: conv, pool, then ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 1000)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


def _fake_torchvision(monkeypatch, calls):
    models = types.ModuleType("torchvision.models")

    def get_model(name, weights=None):
        calls.append((name, weights))
        if name != "tinynet":
            raise ValueError(f"Unknown model {name}")
        return _TinyNet()

    class _Weights:
        DEFAULT = "tinynet-imagenet"

    models.get_model = get_model
    models.get_model_weights = lambda name: _Weights
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)


def test_torchvision_backbone_code_path_with_a_stand_in_module(monkeypatch, tmp_path):
    from pairloss.train.models import build_model

    calls: list = []
    _fake_torchvision(monkeypatch, calls)
    model = build_model("torchvision:tinynet", 6)
    assert calls == [("tinynet", None)] and model.feature_size == 5
    images = torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8)
    emb = model(images)
    assert emb.shape == (4, 6) and torch.allclose(emb.norm(dim=1), torch.ones(4))
    assert model(images[:, :1]).shape == (4, 6)  # grey images repeated on 3 channels
    assert isinstance(model.net.fc, nn.Identity)
    build_model("torchvision:tinynet", 6, pretrained="default")
    assert calls[-1] == ("tinynet", "tinynet-imagenet")
    weights = _TinyNet()
    torch.save(weights.state_dict(), tmp_path / "w.pth")
    loaded = build_model("torchvision:tinynet", 6, pretrained=str(tmp_path / "w.pth"))
    torch.testing.assert_close(loaded.net.conv.weight, weights.conv.weight)
    torch.save({"other": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(PairLossError, match="does not fit torchvision's tinynet"):
        build_model("torchvision:tinynet", 6, pretrained=str(tmp_path / "bad.pth"))
    with pytest.raises(PairLossError, match="torchvision has no model 'nonet'"):
        build_model("torchvision:nonet", 6)
    with pytest.raises(PairLossError, match="pretrained weights"):
        build_model("face", 6, pretrained="default")


# ------------------------------------------------------------------------ evaluation memory


def test_evaluation_memory_is_a_byte_budget_with_the_same_results():
    from pairloss.metrics import pair_scores
    from pairloss.train.evaluate import evaluate_embeddings

    g = torch.Generator().manual_seed(0)
    emb, labels = torch.randn(60, 300, generator=g), torch.arange(60) % 6
    pairs = torch.randint(0, 60, (500, 2), generator=g)
    full = pair_scores(emb, pairs=pairs)
    torch.testing.assert_close(pair_scores(emb, pairs=pairs, max_bytes=16 * 300 * 7), full)
    small = evaluate_embeddings(emb, labels, "face", seed=1, memory=2**20)
    large = evaluate_embeddings(emb, labels, "face", seed=1, memory=2**34)
    assert small == large


def test_raw_and_pca_baselines_are_left_out_beyond_the_budget_and_said_so(tmp_path):
    config = make_config(dataset="digits", out=str(tmp_path), eval_memory=2**22, **TINY)
    task = load_task(config)
    assert task.skipped_baselines() is None
    task.memory = 1000  # far too small for 64-d vectors of a few hundred samples
    model = task.build_model(config)
    names = list(task.baselines(config, model, torch.device("cpu")))
    assert names == ["untrained model (4-d)"]
    assert "raw input and PCA left out" in task.skipped_baselines()


def test_embed_images_like_the_run_whatever_their_size_and_channels(tmp_path):
    from pairloss.train.models import build_model
    from pairloss.train.use import TrainedModel, embed_dataset, embed_files, search

    for c in range(2):
        for i in range(3):
            _png(tmp_path / "data" / f"c{c}" / f"{i}.png", _pixels(c * 3 + i, 12, 9, colour=True))
    config = make_config(dataset="folder", data_dir=str(tmp_path / "data"), out=str(tmp_path))
    model = build_model("face", 5, input_size=(8, 8)).eval()
    trained = TrainedModel(model, config, {"images": True, "shape": [1, 8, 8]})
    emb, names, labels = embed_dataset(trained)
    assert emb.shape == (6, 5) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert names[0].endswith("c0/0.png")
    files = [tmp_path / "data" / "c1" / "2.png"]
    queries, query_names = embed_files(trained, files)
    torch.testing.assert_close(queries[0], emb[5])  # the same file, prepared the same way
    scores, indices = search(queries, emb, k=2)
    assert int(indices[0, 0]) == 5 and float(scores[0, 0]) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(PairLossError, match="is not an image"):
        embed_files(trained, [Path(__file__)])
