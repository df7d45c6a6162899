"""save_weights / load_weights: exact round trips, and clear errors for bad or mismatched files."""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax.io.weights import read_arrays, write_arrays


def _leaves(tree):
    out = []
    for x in jax.tree_util.tree_leaves(tree):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


def _assert_same_bits(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


@eqx.filter_jit  # one compiled program rather than one per eager initialiser
def _stack(key, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(key, 3)
    lstm = recurrax.LSTMCell(6, 3, key=k1, use_peepholes=True, num_proj=4, dtype=dtype)
    gru = recurrax.DropoutWrapper(
        recurrax.GRUCell(5, 4, key=k2, dtype=dtype), output_keep_prob=0.5, key=k3
    )
    return recurrax.MultiRNNCell([lstm, gru])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_round_trip_is_bit_exact(tmp_path, getkey, dtype):
    saved = _stack(getkey(), dtype)
    path = recurrax.save_weights(tmp_path / "stack.rcx", saved)
    like = _stack(getkey(), dtype)
    # The template's own numbers differ, so equality below comes from the file.
    assert not np.array_equal(saved.cells[0].kernel, like.cells[0].kernel)
    loaded = recurrax.load_weights(path, like)
    _assert_same_bits(loaded, saved)
    assert loaded.cells[1].output_keep_prob == 0.5  # configuration comes from the template


def test_model_built_from_cells_round_trips(tmp_path, getkey):
    from recurrax.apps.train import RecurrentModel

    model = RecurrentModel(recurrax.BasicLSTMCell(7, 8, key=getkey()), 10, key=getkey())
    recurrax.save_weights(tmp_path / "m.rcx", model, meta={"cell": "lstm"})
    like = RecurrentModel(recurrax.BasicLSTMCell(7, 8, key=getkey()), 10, key=getkey())
    _assert_same_bits(recurrax.load_weights(tmp_path / "m.rcx", like), model)
    _, meta = read_arrays(tmp_path / "m.rcx", kind="weights")
    assert meta == {"cell": "lstm"}


def test_any_pytree_with_scalars(tmp_path, getkey):
    tree = {
        "cells": (recurrax.BasicRNNCell(3, 2, key=getkey()), None),
        "step": jnp.asarray(7, jnp.int32),
        "scale": jnp.asarray(0.25, jnp.float64),
    }
    recurrax.save_weights(tmp_path / "t.rcx", tree)
    like = {
        "cells": (recurrax.BasicRNNCell(3, 2, key=getkey()), None),
        "step": jnp.asarray(0, jnp.int32),
        "scale": jnp.asarray(1.0, jnp.float64),
    }
    loaded = recurrax.load_weights(tmp_path / "t.rcx", like)
    assert loaded["step"].shape == () and int(loaded["step"]) == 7
    assert float(loaded["scale"]) == 0.25 and loaded["cells"][1] is None
    _assert_same_bits(loaded, tree)


@pytest.fixture
def saved(tmp_path, getkey):
    cell = recurrax.BasicLSTMCell(4, 3, key=getkey())
    return recurrax.save_weights(tmp_path / "cell.rcx", cell), cell


@pytest.mark.parametrize("keep", [0, 5, 12, 40, -1])
def test_truncated_file_is_reported(saved, keep):
    path, cell = saved
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep >= 0 else len(data) + keep])
    with pytest.raises(ValueError, match="is truncated"):
        recurrax.load_weights(path, cell)


@pytest.mark.parametrize("offset, part", [(30, "header"), (-5, "arrays")])
def test_corrupted_file_is_reported(saved, offset, part):
    path, cell = saved
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"is corrupted: the SHA-256 of its {part} does not"):
        recurrax.load_weights(path, cell)


def test_foreign_and_missing_files(tmp_path, saved):
    _, cell = saved
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 something else entirely")
    with pytest.raises(ValueError, match="is not a recurrax weights file"):
        recurrax.load_weights(tmp_path / "x.npz", cell)
    with pytest.raises(FileNotFoundError, match="no weights file at"):
        recurrax.load_weights(tmp_path / "absent.rcx", cell)
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        recurrax.save_weights(tmp_path / "no" / "dir.rcx", cell)
    write_arrays(tmp_path / "c.rcx", {"a": np.zeros(2)}, kind="checkpoint")
    with pytest.raises(ValueError, match="holds a 'checkpoint' file, not a 'weights' file"):
        recurrax.load_weights(tmp_path / "c.rcx", cell)


_build = eqx.filter_jit(lambda cls, key, *args, **kw: cls(*args, key=key, **kw))


def test_mismatched_model_is_reported(saved, getkey):
    path, _ = saved
    with pytest.raises(ValueError, match=r"array '\.kernel' is float32\[7, 16\] in the file but "):
        recurrax.load_weights(path, _build(recurrax.BasicLSTMCell, getkey(), 5, 2))
    with pytest.raises(ValueError, match=r"is float32\[7, 16\] in the file but float64\[7, 16\]"):
        recurrax.load_weights(
            path, _build(recurrax.BasicLSTMCell, getkey(), 4, 3, dtype=jnp.float64)
        )
    with pytest.raises(
        ValueError,
        match=r"arrays the model needs but the file lacks: \['\.w_f_diag', '\.w_i_diag', "
        r"'\.w_o_diag'\]",
    ):
        recurrax.load_weights(path, _build(recurrax.LSTMCell, getkey(), 4, 3, use_peepholes=True))
    with pytest.raises(
        ValueError, match=r"arrays in the file the model does not have: \['\.kernel', '\.bias'\]"
    ):
        recurrax.load_weights(path, _build(recurrax.GRUCell, getkey(), 4, 3))


def test_failed_write_keeps_the_old_file(saved, getkey, monkeypatch):
    path, cell = saved
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        recurrax.save_weights(path, recurrax.BasicLSTMCell(4, 3, key=getkey()))
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["cell.rcx"]  # no temp file left
    _assert_same_bits(recurrax.load_weights(path, cell), cell)
