"""cifar10 / cifar100 from the official pickle batches, and the restricted unpickler."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from mltk.core.errors import ArtifactError, DataMissingError
from mltk.data import load_dataset
from mltk.data.safe_pickle import load_restricted

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


@pytest.fixture
def cifar_arrays():
    rng = np.random.default_rng(1)
    train = (rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 12))
    test = (rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), np.array([3, 0, 9, 3]))
    return train, test


def check_round_trip(dataset, images, labels):
    assert dataset.images.shape == (len(images), 3, 32, 32)
    assert np.array_equal(dataset.images.numpy(), images)
    assert dataset.labels.tolist() == [int(label) for label in labels]


def test_cifar10_read_straight_from_the_tarball(tmp_path, formats, cifar_arrays):
    members = formats.cifar10_members(*cifar_arrays, CIFAR10_NAMES)
    formats.write_tarball(
        tmp_path / "cifar10" / "cifar-10-python.tar.gz", "cifar-10-batches-py", members
    )
    for split, (images, labels) in zip(("train", "test"), cifar_arrays, strict=True):
        dataset = load_dataset("cifar10", split, data_dir=tmp_path)
        check_round_trip(dataset, images, labels)
        assert dataset.class_names == CIFAR10_NAMES
    assert not (tmp_path / "cifar10" / "cifar-10-batches-py").exists(), "nothing is extracted"


def test_cifar10_extracted_folder_in_a_torchvision_root(tmp_path, formats, cifar_arrays):
    formats.write_folder(
        tmp_path / "cifar-10-batches-py", formats.cifar10_members(*cifar_arrays, CIFAR10_NAMES)
    )
    check_round_trip(load_dataset("cifar10", "train", data_dir=tmp_path), *cifar_arrays[0])


def test_cifar100_fine_labels_and_names(tmp_path, formats):
    rng = np.random.default_rng(2)
    names = [f"class{i:02d}" for i in range(100)]
    train = (rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8), np.array([99, 0, 42, 7, 99]))
    test = (rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8), np.array([1, 2]))
    members = formats.cifar100_members(train, test, names)
    formats.write_tarball(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", members)
    dataset = load_dataset("cifar100", "train", data_dir=tmp_path)
    check_round_trip(dataset, *train)
    assert dataset.class_names == names and dataset.num_classes == 100
    check_round_trip(load_dataset("cifar100", "test", data_dir=tmp_path), *test)


def test_python3_pickles_with_bytes_keys_load_too(tmp_path, formats, cifar_arrays):
    members = {}
    for name, data in formats.cifar10_members(*cifar_arrays, CIFAR10_NAMES).items():
        contents = load_restricted(data, name)
        python3_form = {key.encode(): value for key, value in contents.items()}
        members[name] = pickle.dumps(python3_form, protocol=5)  # numpy's _frombuffer path
    formats.write_folder(tmp_path / "cifar-10-batches-py", members)
    check_round_trip(load_dataset("cifar10", "test", data_dir=tmp_path), *cifar_arrays[1])


def test_missing_tarball_names_it_and_the_folders(tmp_path):
    with pytest.raises(DataMissingError) as caught:
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert caught.value.exit_code == 3
    assert "cifar-10-python.tar.gz" in caught.value.message
    assert "cifar-10-batches-py/" in caught.value.message
    assert str(tmp_path / "cifar10") in caught.value.message
    assert f"put cifar-10-python.tar.gz in {tmp_path / 'cifar10'}/" in caught.value.hint


def test_incomplete_extracted_folder_names_the_missing_batch(tmp_path, formats, cifar_arrays):
    members = formats.cifar10_members(*cifar_arrays, CIFAR10_NAMES)
    del members["data_batch_3"]
    formats.write_folder(tmp_path / "cifar-10-batches-py", members)
    with pytest.raises(DataMissingError, match="data_batch_3"):
        load_dataset("cifar10", "train", data_dir=tmp_path)
    assert len(load_dataset("cifar10", "test", data_dir=tmp_path)) == 4


def test_truncated_tarball_is_an_artifact_error(tmp_path, formats, cifar_arrays):
    path = formats.write_tarball(
        tmp_path / "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        formats.cifar10_members(*cifar_arrays, CIFAR10_NAMES),
    )
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ArtifactError, match="cifar-10-python.tar.gz.*truncated or corrupt"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


def test_garbage_tarball_is_an_artifact_error(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"this is not a tarball" * 50)
    with pytest.raises(ArtifactError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


class RunsAShellCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_code_and_never_runs_it(tmp_path, formats, cifar_arrays):
    marker = tmp_path / "ran"
    payload = pickle.dumps(
        {"data": RunsAShellCommand(f"touch {marker}"), "labels": [0]}, protocol=2
    )
    members = formats.cifar10_members(*cifar_arrays, CIFAR10_NAMES)
    members["test_batch"] = payload
    formats.write_tarball(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(
        ArtifactError, match=r"test_batch: refused .* references (posix|nt|os)\.system"
    ) as caught:
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert caught.value.exit_code == 3
    assert not marker.exists(), "the command in the pickle must never run"


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(RunsAShellCommand("echo hi")),
        pickle.dumps(eval, protocol=2),
        b"cbuiltins\nexec\n(S'print(1)'\ntR.",
    ],
)
def test_load_restricted_refuses_any_other_global(payload, capfd):
    with pytest.raises(ArtifactError, match="refused to load a pickle that references"):
        load_restricted(payload, "evil.pkl")
    assert capfd.readouterr().out == ""


def test_load_restricted_wraps_corrupt_pickles():
    data = pickle.dumps({"data": np.zeros((2, 3), np.uint8)}, protocol=4)
    with pytest.raises(ArtifactError, match="broken.pkl: not a readable pickle"):
        load_restricted(data[:-10], "broken.pkl")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_pickles_of_every_protocol_load(protocol):
    batch = {"data": np.arange(24, dtype=np.uint8).reshape(2, 12), "labels": [3, 1]}
    loaded = load_restricted(pickle.dumps(batch, protocol=protocol), "batch")
    assert np.array_equal(loaded["data"], batch["data"]) and loaded["labels"] == [3, 1]


def test_codecs_encode_is_allowed_only_with_latin1():
    # protocol 2: GLOBAL _codecs encode, then the arguments ("x", "rot13")
    payload = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(ArtifactError, match="not a readable pickle"):
        load_restricted(payload, "batch")


def test_a_tarball_member_larger_than_any_cifar_batch_is_refused_unread(tmp_path, monkeypatch):
    import io
    import tarfile

    from mltk.data.images import cifar

    monkeypatch.setattr(cifar, "MAX_MEMBER_BYTES", 1000)
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 5000
        tar.addfile(info, io.BytesIO(bytes(5000)))
    with pytest.raises(ArtifactError, match=r"data_batch_1: 5000 bytes, more than any CIFAR batch"):
        load_dataset("cifar10", data_dir=str(tmp_path))
