"""save_weights / load_weights: exact round trips, and clear errors for bad or mismatched files."""

import hashlib
import json
import os
import struct

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
    path = recurrax.save_weights(tmp_path / "stack.safetensors", saved)
    like = _stack(getkey(), dtype)
    # The template's own numbers differ, so equality below comes from the file.
    assert not np.array_equal(saved.cells[0].kernel, like.cells[0].kernel)
    loaded = recurrax.load_weights(path, like)
    _assert_same_bits(loaded, saved)
    assert loaded.cells[1].output_keep_prob == 0.5  # configuration comes from the template


def test_model_built_from_cells_round_trips(tmp_path, getkey):
    from recurrax.apps.train import RecurrentModel

    model = RecurrentModel(recurrax.BasicLSTMCell(7, 8, key=getkey()), 10, key=getkey())
    recurrax.save_weights(tmp_path / "m.safetensors", model, meta={"cell": "lstm"})
    like = RecurrentModel(recurrax.BasicLSTMCell(7, 8, key=getkey()), 10, key=getkey())
    _assert_same_bits(recurrax.load_weights(tmp_path / "m.safetensors", like), model)
    _, meta = read_arrays(tmp_path / "m.safetensors", kind="weights")
    assert meta == {"cell": "lstm"}


def test_any_pytree_with_scalars(tmp_path, getkey):
    tree = {
        "cells": (recurrax.BasicRNNCell(3, 2, key=getkey()), None),
        "step": jnp.asarray(7, jnp.int32),
        "scale": jnp.asarray(0.25, jnp.float64),
    }
    recurrax.save_weights(tmp_path / "t.safetensors", tree)
    like = {
        "cells": (recurrax.BasicRNNCell(3, 2, key=getkey()), None),
        "step": jnp.asarray(0, jnp.int32),
        "scale": jnp.asarray(1.0, jnp.float64),
    }
    loaded = recurrax.load_weights(tmp_path / "t.safetensors", like)
    assert loaded["step"].shape == () and int(loaded["step"]) == 7
    assert float(loaded["scale"]) == 0.25 and loaded["cells"][1] is None
    _assert_same_bits(loaded, tree)


@pytest.fixture
def saved(tmp_path, getkey):
    cell = recurrax.BasicLSTMCell(4, 3, key=getkey())
    return recurrax.save_weights(tmp_path / "cell.safetensors", cell), cell


@pytest.mark.parametrize("keep", [0, 5, 12, 40, -1])
def test_truncated_file_is_reported(saved, keep):
    path, cell = saved
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep >= 0 else len(data) + keep])
    with pytest.raises(ValueError, match="is truncated"):
        recurrax.load_weights(path, cell)


@pytest.mark.parametrize("offset, part", [("header", "header"), (-5, "arrays")])
def test_corrupted_file_is_reported(saved, offset, part):
    path, cell = saved
    data = bytearray(path.read_bytes())
    if offset == "header":  # still valid JSON, with another shape
        data = bytearray(bytes(data).replace(b'"shape": [7, 16]', b'"shape": [7, 17]', 1))
    else:
        data[offset] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"is corrupted: the SHA-256 of its {part} does not"):
        recurrax.load_weights(path, cell)


def test_unreadable_header_is_reported(saved):
    path, cell = saved
    data = bytearray(path.read_bytes())
    data[8] = ord("[")  # the header's opening brace
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is not a recurrax weights file .it is not a safetensors"):
        recurrax.load_weights(path, cell)
    data[8], data[9] = ord("{"), ord("]")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is corrupted: its header is not the JSON recurrax"):
        recurrax.load_weights(path, cell)


def test_foreign_and_missing_files(tmp_path, saved):
    _, cell = saved
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 something else entirely")
    with pytest.raises(ValueError, match="is not a recurrax weights file .it is not a safetensors"):
        recurrax.load_weights(tmp_path / "x.npz", cell)
    with pytest.raises(FileNotFoundError, match="no weights file at"):
        recurrax.load_weights(tmp_path / "absent.safetensors", cell)
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        recurrax.save_weights(tmp_path / "no" / "dir.safetensors", cell)
    write_arrays(tmp_path / "c.safetensors", {"a": np.zeros(2)}, kind="checkpoint")
    with pytest.raises(ValueError, match="holds a 'checkpoint' file, not a 'weights' file"):
        recurrax.load_weights(tmp_path / "c.safetensors", cell)


_build = eqx.filter_jit(lambda cls, key, *args, **kw: cls(*args, key=key, **kw))


def test_mismatched_model_is_reported(saved, getkey):
    path, _ = saved
    with pytest.raises(
        ValueError, match=r"array 'rnn/basic_lstm_cell/kernel' is float32\[7, 16\] in the file but "
    ):
        recurrax.load_weights(path, _build(recurrax.BasicLSTMCell, getkey(), 5, 2))
    with pytest.raises(ValueError, match=r"is float32\[7, 16\] in the file but float64\[7, 16\]"):
        recurrax.load_weights(
            path, _build(recurrax.BasicLSTMCell, getkey(), 4, 3, dtype=jnp.float64)
        )
    with pytest.raises(
        ValueError,
        match=r"arrays the model needs but the file lacks: \['rnn/lstm_cell/kernel', "
        r"'rnn/lstm_cell/bias', 'rnn/lstm_cell/w_f_diag', 'rnn/lstm_cell/w_i_diag', "
        r"'rnn/lstm_cell/w_o_diag'\]; arrays in the file the model does not have: "
        r"\['rnn/basic_lstm_cell/kernel', 'rnn/basic_lstm_cell/bias'\]",
    ):
        recurrax.load_weights(path, _build(recurrax.LSTMCell, getkey(), 4, 3, use_peepholes=True))
    with pytest.raises(
        ValueError,
        match=r"arrays in the file the model does not have: \['rnn/basic_lstm_cell/kernel', "
        r"'rnn/basic_lstm_cell/bias'\]",
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
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "cell.safetensors"
    ]  # no temp file left
    _assert_same_bits(recurrax.load_weights(path, cell), cell)


def _header(path):
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    return json.loads(data[8 : 8 + n])


def test_tf1_cells_are_stored_under_their_tf1_names(tmp_path, getkey):
    cell = _stack(getkey())
    path = recurrax.save_weights(tmp_path / "stack.safetensors", cell)
    header = _header(path)
    names = [k for k in header if k != "__metadata__"]
    assert names == [*recurrax.tf1_variable_names(cell), ".cells[1].key"]  # dropout key: a path
    assert header["rnn/multi_rnn_cell/cell_0/lstm_cell/kernel"]["dtype"] == "F32"
    assert header["rnn/multi_rnn_cell/cell_0/lstm_cell/kernel"]["shape"] == [
        7,
        24,
    ]  # [input + num_proj, 4 units]
    meta = header["__metadata__"]
    assert meta["format"] == "recurrax" and meta["kind"] == "weights" and meta["keys"] == "tf1"
    config = json.loads(meta["config"])
    assert config["class"] == "MultiRNNCell"
    assert config["cells"][0]["class"] == "LSTMCell" and config["cells"][0]["num_proj"] == 4
    assert config["cells"][1]["output_keep_prob"] == 0.5
    assert config["cells"][1]["cell"]["class"] == "GRUCell"


def test_other_models_keep_their_pytree_paths(tmp_path, getkey):
    from recurrax.apps.train import RecurrentModel

    model = RecurrentModel(recurrax.GRUCell(5, 3, key=getkey()), 4, key=getkey())
    header = _header(recurrax.save_weights(tmp_path / "m.safetensors", model))
    assert ".cell.gates_kernel" in header and header["__metadata__"]["keys"] == "paths"


def test_other_tools_read_the_file(tmp_path, getkey):
    numpy_reader = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    cell = recurrax.MultiRNNCell(
        [recurrax.BasicLSTMCell(4, 3, key=getkey()), recurrax.GRUCell(5, 4, key=getkey())]
    )
    path = recurrax.save_weights(tmp_path / "cell.safetensors", cell, meta={"epoch": 3})
    read = numpy_reader.load_file(str(path))
    expected = recurrax.tf1_weights(cell)
    assert sorted(read) == sorted(expected)
    for name, value in expected.items():
        assert read[name].dtype == value.dtype and np.array_equal(read[name], value)
    with safe_open(str(path), framework="numpy") as f:
        assert json.loads(f.metadata()["meta"]) == {"epoch": 3}
    # And a file the safetensors package wrote, which carries no checksum, is refused.
    numpy_reader.save_file(expected, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="is a safetensors file, but not one written by recurrax"):
        recurrax.load_weights(tmp_path / "foreign.safetensors", cell)


def _write_first_format(path, arrays, kind="weights"):
    """A file in recurrax's first format, as its writer laid it out."""
    entries, blobs, offset = [], [], 0
    for name, x in arrays.items():
        blob = x.tobytes()
        entries.append(
            {"name": name, "shape": list(x.shape), "dtype": x.dtype.name, "offset": offset}
        )
        entries[-1]["nbytes"] = len(blob)
        blobs.append(blob)
        offset += len(blob)
    payload = b"".join(blobs)
    header = {"format": "recurrax", "version": 1, "kind": kind, "meta": {}, "arrays": entries}
    header.update(payload_nbytes=offset, payload_sha256=hashlib.sha256(payload).hexdigest())
    head = json.dumps(header, sort_keys=True).encode()
    digest = hashlib.sha256(head).digest()
    path.write_bytes(b"RECURRAX" + struct.pack("<Q", len(head)) + head + digest + payload)


def test_files_of_the_first_format_are_still_read(tmp_path, getkey):
    cell = recurrax.BasicLSTMCell(4, 3, key=getkey())
    path = tmp_path / "old.rcx"
    _write_first_format(path, {".kernel": np.asarray(cell.kernel), ".bias": np.asarray(cell.bias)})
    _assert_same_bits(recurrax.load_weights(path, recurrax.BasicLSTMCell(4, 3, key=getkey())), cell)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="is truncated: its header declares 512 bytes"):
        recurrax.load_weights(path, cell)


def test_a_dtype_safetensors_lacks_is_refused(tmp_path):
    with pytest.raises(
        TypeError, match=r"array \"\['z'\]\" has dtype complex64, which a safetensors"
    ):
        recurrax.save_weights(tmp_path / "c.safetensors", {"z": jnp.zeros(2, jnp.complex64)})
    assert list(tmp_path.iterdir()) == []
