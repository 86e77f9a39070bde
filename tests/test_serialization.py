"""fastconv.nn.save / load: .npz and .safetensors round trips, torch .pth reading."""

from __future__ import annotations

import builtins

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
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ImportError, match="needs PyTorch"):
        nn.load(tmp_path / "weights.pth")
