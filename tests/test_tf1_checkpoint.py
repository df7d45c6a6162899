"""load_tf1_checkpoint: TF1 Saver checkpoints read without TensorFlow, checked to the last byte.

The fixtures under fixtures/tf1/ were written by TensorFlow (tools/make_tf1_fixtures.py): a
``dynamic_rnn`` over ``MultiRNNCell([BasicLSTMCell(4), GRUCell(5)])`` with a dense head, trained
three Adam steps, saved by ``tf.compat.v1.train.Saver`` unsharded and sharded, with what
``tf.train.load_checkpoint`` reads from them and the TF model's outputs on a fixed input.
"""

import shutil
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax.io.crc32c import crc32c, mask, unmask
from recurrax.io.sstable import read_varint
from recurrax.io.tf1_checkpoint import load_tf1_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "tf1"
KINDS = ["single", "sharded"]


# TF1's float32 outputs, checked to 1e-6: full float32 dots, also on a GPU.
pytestmark = pytest.mark.usefixtures("full_float32_dots")


def _copy(tmp_path, kind="single") -> Path:
    return Path(shutil.copytree(FIXTURES / kind, tmp_path / kind))


@pytest.mark.parametrize("kind", KINDS)
def test_every_variable_is_read_as_tensorflow_reads_it(kind):
    variables = load_tf1_checkpoint(FIXTURES / kind)
    expected = {
        k.replace("|", "/"): v for k, v in np.load(FIXTURES / kind / "expected.npz").items()
    }
    assert sorted(variables) == sorted([*expected, "tag"])
    for name, value in expected.items():
        assert variables[name].dtype == value.dtype, name
        assert variables[name].shape == value.shape, name
        assert variables[name].tobytes() == value.tobytes(), name
    assert "rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel/Adam_1" in variables  # slots too
    assert variables["global_step"].dtype == np.int64 and int(variables["global_step"]) == 3
    assert variables["tag"].dtype == object and variables["tag"][()] == b"recurrax fixture"


def test_partitioned_variables_are_assembled():
    variables = load_tf1_checkpoint(FIXTURES / "partitioned" / "model.ckpt")
    expected = np.load(FIXTURES / "partitioned" / "expected.npz")
    assert sorted(variables) == ["emb/table", "emb/wide"]  # the slices are not listed
    for key, value in expected.items():
        got = variables[key.replace("|", "/")]
        assert got.shape == value.shape and got.tobytes() == value.tobytes()


def test_every_way_of_naming_the_checkpoint_reads_the_same(tmp_path):
    ref = load_tf1_checkpoint(FIXTURES / "sharded")
    prefix = FIXTURES / "sharded" / "model.ckpt-3"
    for path in (
        prefix,
        str(prefix),
        prefix.with_name("model.ckpt-3.index"),
        prefix.with_name("model.ckpt-3.data-00001-of-00003"),
    ):
        got = load_tf1_checkpoint(path)
        assert sorted(got) == sorted(ref)
        assert all(got[k].tobytes() == ref[k].tobytes() for k in ref if k != "tag")


def _tf1_cell(key):
    k0, k1 = jax.random.split(key)
    return recurrax.MultiRNNCell(
        [recurrax.BasicLSTMCell(4, 3, key=k0), recurrax.GRUCell(5, 4, key=k1)]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_recurrax_reproduces_the_tf1_model(kind, getkey):
    directory = FIXTURES / kind
    variables = load_tf1_checkpoint(directory)
    cell = recurrax.load_tf1_weights(_tf1_cell(getkey()), variables, strict=False)
    outputs, (lstm_state, gru_state) = recurrax.dynamic_rnn(
        cell,
        np.load(directory / "inputs.npy"),
        sequence_length=np.array([4, 2]),
        dtype=jnp.float32,
    )
    np.testing.assert_allclose(outputs, np.load(directory / "outputs.npy"), atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(lstm_state.c, np.load(directory / "state_c.npy"), atol=1e-6)
    np.testing.assert_allclose(lstm_state.h, np.load(directory / "state_h.npy"), atol=1e-6)
    np.testing.assert_allclose(gru_state, np.load(directory / "state_gru.npy"), atol=1e-6)


def test_a_flipped_byte_in_a_tensor_is_a_checksum_error(tmp_path):
    directory = _copy(tmp_path, "sharded")
    data = directory / "model.ckpt-3.data-00001-of-00003"
    raw = bytearray(data.read_bytes())
    raw[40] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"data-00001-of-00003 is corrupted: the CRC-32C of '"):
        load_tf1_checkpoint(directory)


def test_a_flipped_byte_in_a_string_is_a_checksum_error(tmp_path):
    directory = _copy(tmp_path)
    data = directory / "model.ckpt-3.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[-2] ^= 0x20  # inside b"recurrax fixture", the last tensor
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"is corrupted: the CRC-32C of 'tag' \(bytes"):
        load_tf1_checkpoint(directory)


def test_a_flipped_byte_in_the_index_is_a_checksum_error(tmp_path):
    index = _copy(tmp_path) / "model.ckpt-3.index"
    raw = bytearray(index.read_bytes())
    raw[raw.index(b"basic_lstm_cell")] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(
        ValueError,
        match=r"model.ckpt-3.index is not a readable checkpoint index: "
        r"the CRC-32C of its data block at byte 0 does not match",
    ):
        load_tf1_checkpoint(index)


@pytest.mark.parametrize("name", ["model.ckpt-3.data-00000-of-00001", "model.ckpt-3.index"])
def test_a_truncated_file_is_refused(tmp_path, name):
    directory = _copy(tmp_path)
    path = directory / name
    path.write_bytes(path.read_bytes()[:-7])
    message = "is truncated: 'tag' needs bytes" if "data" in name else "magic number"
    with pytest.raises(ValueError, match=message):
        load_tf1_checkpoint(directory)


def test_a_missing_shard_is_refused(tmp_path):
    directory = _copy(tmp_path, "sharded")
    (directory / "model.ckpt-3.data-00002-of-00003").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"model.ckpt-3 lacks its data shard model.ckpt-3.data-00002-of-00003 \(it has 3 "
        r"shards",
    ):
        load_tf1_checkpoint(directory)


def test_a_moved_directory_is_found_through_its_state_file(tmp_path):
    directory = _copy(tmp_path)
    (directory / "checkpoint").write_text(
        'model_checkpoint_path: "/gone/elsewhere/model.ckpt-3"\n'
        'all_model_checkpoint_paths: "/gone/elsewhere/model.ckpt-3"\n'
    )
    assert "global_step" in load_tf1_checkpoint(directory)


def test_a_tf2_object_checkpoint_is_explained():
    with pytest.raises(
        ValueError, match=r"is a TF2 object-based checkpoint \(tf.train.Checkpoint or Keras\)"
    ):
        load_tf1_checkpoint(FIXTURES / "tf2" / "ckpt")


def test_wrong_kinds_of_path_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no TF1 checkpoint at .*nothing: .*nothing.index"):
        load_tf1_checkpoint(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=r"holds no 'checkpoint' state file"):
        load_tf1_checkpoint(tmp_path)
    directory = _copy(tmp_path)
    (directory / "checkpoint").unlink()
    with pytest.raises(FileNotFoundError, match=r"pass one of the prefixes \['model.ckpt-3'\]"):
        load_tf1_checkpoint(directory)
    saved_model = tmp_path / "export"
    (saved_model / "variables").mkdir(parents=True)
    (saved_model / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(ValueError, match=r"is a SavedModel directory, not a checkpoint.*variables"):
        load_tf1_checkpoint(saved_model)
    with pytest.raises(ValueError, match=r"is a SavedModel graph, not a checkpoint"):
        load_tf1_checkpoint(saved_model / "saved_model.pb")
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match=r"model.h5 is an HDF5 file \(Keras"):
        load_tf1_checkpoint(h5)
    single = tmp_path / "model.ckpt"
    single.write_bytes(bytes(100))
    with pytest.raises(ValueError, match=r"model.ckpt is not a checkpoint prefix.*old V1 format"):
        load_tf1_checkpoint(single)
    (tmp_path / "junk.index").write_bytes(b"not a table" * 10)
    with pytest.raises(ValueError, match=r"junk.index is not a readable checkpoint index"):
        load_tf1_checkpoint(tmp_path / "junk")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "checkpoint").write_text("nothing here\n")
    with pytest.raises(ValueError, match=r"does not name a model_checkpoint_path"):
        load_tf1_checkpoint(tmp_path / "state")


def _set_dtype(index: Path, name: bytes, dtype: int) -> None:
    """Rewrite the dtype of entry ``name`` in a one-data-block index and fix that block's CRC."""
    raw = bytearray(index.read_bytes())
    at = raw.index(name) + len(name)
    assert raw[at : at + 2] == b"\x08\x01"  # field 1 (dtype) = DT_FLOAT
    raw[at + 1] = dtype
    # One data block at 0, then its 5-byte trailer, then the metaindex block the footer names.
    meta_offset, _ = read_varint(raw, len(raw) - 48)
    size = meta_offset - 5
    raw[size + 1 : size + 5] = struct.pack("<I", mask(crc32c(bytes(raw[: size + 1]))))
    index.write_bytes(bytes(raw))


def test_a_dtype_without_numpy_equivalent_is_refused(tmp_path):
    directory = _copy(tmp_path)
    _set_dtype(directory / "model.ckpt-3.index", b"beta1_power", 20)  # DT_RESOURCE
    with pytest.raises(
        ValueError, match=r"variable 'beta1_power' has TensorFlow dtype 'resource', which has no"
    ):
        load_tf1_checkpoint(directory)


def test_crc32c_matches_the_standard():
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720's check value
    assert crc32c(bytes(32)) == 0x8A9136AA and crc32c(b"\xff" * 32) == 0x62A8AB43
    data = np.random.default_rng(0).integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    chained = 0
    for start in range(0, len(data), 4000):  # small pieces take the byte loop
        chained = crc32c(data[start : start + 4000], chained)
    assert crc32c(data) == chained  # one large piece takes the lanes
    assert all(unmask(mask(c)) == c for c in (0, 1, 0xFFFFFFFF, 0xE3069283))
