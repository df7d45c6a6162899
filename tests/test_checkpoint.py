"""Training checkpoints: exact round trip, atomic replacement, refusal of bad or foreign files."""

import functools
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recurrax
from recurrax.apps.train import RecurrentModel
from recurrax.io.checkpoint import checkpoint_path

CONFIG = {"task": "digits", "cell": "lstm", "learning_rate": 0.01, "seed": 3}


@eqx.filter_jit
def _state(key, steps=2):
    """A model and an Adam state that has taken ``steps`` steps (so its moments are not zero)."""
    model = RecurrentModel(recurrax.GRUCell(5, 3, key=key), 4, key=key)
    opt = optax.adam(1e-2)
    opt_state = opt.init(eqx.filter(model, eqx.is_array))
    for k in range(steps):
        grads = jax.tree_util.tree_map(functools.partial(jnp.full_like, fill_value=0.5 + k), model)
        updates, opt_state = opt.update(grads, opt_state)
        model = eqx.apply_updates(model, updates)
    return model, opt_state


def _bits(tree):
    return [
        np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))
    ]


@pytest.fixture
def saved(tmp_path):
    model, opt_state = _state(jax.random.key(0))
    recurrax.save_checkpoint(
        tmp_path,
        model=model,
        opt_state=opt_state,
        step=17,
        key=jax.random.key(9),
        data_state={"seed": 3},
        config=CONFIG,
        history={"loss": [1.5, 0.25]},
    )
    return tmp_path, model, opt_state


def test_round_trip_is_exact(saved):
    directory, model, opt_state = saved
    like_model, like_opt = _state(jax.random.key(1), steps=0)
    ckpt = recurrax.load_checkpoint(directory, model=like_model, opt_state=like_opt, config=CONFIG)
    assert _bits(ckpt.model) == _bits(model) and _bits(ckpt.model) != _bits(like_model)
    assert _bits(ckpt.opt_state) == _bits(opt_state)
    assert int(ckpt.opt_state[0].count) == 2
    assert ckpt.step == 17
    assert np.array_equal(jax.random.key_data(ckpt.key), jax.random.key_data(jax.random.key(9)))
    assert ckpt.data_state == {"seed": 3} and ckpt.config == CONFIG
    assert ckpt.history == {"loss": [1.5, 0.25]}


def test_other_settings_are_refused_and_nothing_is_written(saved):
    directory, _, _ = saved
    before = checkpoint_path(directory).read_bytes()
    model, opt_state = _state(jax.random.key(1), steps=0)
    with pytest.raises(
        ValueError,
        match=r"other settings: cell: checkpoint has 'lstm', this run has 'gru'; seed: "
        r"checkpoint has 3, this run has 4\. Resume with the same settings",
    ):
        recurrax.load_checkpoint(
            directory, model=model, opt_state=opt_state, config={**CONFIG, "cell": "gru", "seed": 4}
        )
    assert checkpoint_path(directory).read_bytes() == before


def test_other_model_or_optimizer_is_refused(saved, getkey):
    directory, _, opt_state = saved
    other = RecurrentModel(recurrax.GRUCell(6, 3, key=getkey()), 4, key=getkey())
    with pytest.raises(ValueError, match=r"does not match the model: array '\.cell\.gates_kernel'"):
        recurrax.load_checkpoint(directory, model=other, opt_state=opt_state)
    model, _ = _state(getkey(), steps=0)
    sgd_state = optax.sgd(0.1, momentum=0.9).init(eqx.filter(model, eqx.is_array))
    with pytest.raises(ValueError, match="does not match the optimizer state: arrays the"):
        recurrax.load_checkpoint(directory, model=model, opt_state=sgd_state)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_is_refused_and_left_as_is(saved, damage):
    directory, model, opt_state = saved
    path = checkpoint_path(directory)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-3] ^= 0x80
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is truncated" if damage == "truncate" else "corrupted"):
        recurrax.load_checkpoint(directory, model=model, opt_state=opt_state)
    assert path.read_bytes() == bytes(data)


def test_missing_checkpoint_and_bad_step(tmp_path):
    model, opt_state = _state(jax.random.key(0), steps=0)
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*checkpoint.rcx"):
        recurrax.load_checkpoint(tmp_path, model=model, opt_state=opt_state)
    with pytest.raises(ValueError, match=r"step must be an int >= 0 and <= 2147483647; got -1"):
        recurrax.save_checkpoint(
            tmp_path,
            model=model,
            opt_state=opt_state,
            step=-1,
            key=jax.random.key(0),
            data_state={},
            config={},
        )
    assert list(tmp_path.iterdir()) == []


def test_interrupted_save_keeps_the_previous_checkpoint(saved, monkeypatch):
    directory, model, opt_state = saved
    before = checkpoint_path(directory).read_bytes()

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        recurrax.save_checkpoint(
            directory,
            model=model,
            opt_state=opt_state,
            step=18,
            key=jax.random.key(9),
            data_state={"seed": 3},
            config=CONFIG,
        )
    monkeypatch.undo()
    assert checkpoint_path(directory).read_bytes() == before
    assert [p.name for p in directory.iterdir()] == ["checkpoint.rcx"]
    ckpt = recurrax.load_checkpoint(directory, model=model, opt_state=opt_state)
    assert ckpt.step == 17


def test_the_checkpoint_is_a_safetensors_file(saved):
    numpy_reader = pytest.importorskip("safetensors.numpy")
    directory, model, _ = saved
    arrays = numpy_reader.load_file(str(checkpoint_path(directory)))
    assert np.array_equal(arrays["model.cell.gates_kernel"], model.cell.gates_kernel)
    assert "opt_state[0].mu.cell.gates_kernel" in arrays and arrays["key"].dtype == np.uint32


def _rewrite(directory, change_meta=None, change_arrays=None):
    """Rewrite the checkpoint with valid checksums around altered contents."""
    from recurrax.io.tensorfile import read_arrays, write_arrays

    path = checkpoint_path(directory)
    arrays, meta = read_arrays(path, kind="checkpoint")
    if change_meta is not None:
        meta = change_meta(meta)
    if change_arrays is not None:
        arrays = change_arrays(arrays)
    write_arrays(path, arrays, kind="checkpoint", meta=meta)


def _without(mapping, key):
    return {k: v for k, v in mapping.items() if k != key}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: _without(m, "step"), "field 'step' is missing"),
        (lambda m: _without(m, "config"), "field 'config' is missing"),
        (lambda m: _without(m, "data_state"), "field 'data_state' is missing"),
        (lambda m: {**m, "step": "17"}, "field 'step' must be an int; it is '17'"),
        (lambda m: {**m, "step": 17.0}, "field 'step' must be an int; it is 17.0"),
        (lambda m: {**m, "step": True}, "field 'step' must be an int; it is True"),
        (lambda m: {**m, "step": -3}, "field 'step' must be from 0 to 2147483647; it is -3"),
        (lambda m: {**m, "step": 2**40}, "field 'step' must be from 0 to 2147483647; it is 1099"),
        (lambda m: {**m, "config": [1]}, "field 'config' must be a dict; it is \\[1\\]"),
        (lambda m: {**m, "data_state": {"seed": "3"}}, "field 'data_state.seed' must be an int"),
        (lambda m: {**m, "history": []}, "field 'history' must be a dict"),
        (lambda m: {**m, "history": {"loss": "x"}}, "field 'history.loss' must be a list of"),
    ],
)
def test_a_checksummed_checkpoint_with_bad_metadata_is_refused(saved, change, message):
    directory, model, opt_state = saved
    _rewrite(directory, change_meta=change)
    with pytest.raises(ValueError, match="is not a valid checkpoint: " + message):
        recurrax.load_checkpoint(directory, model=model, opt_state=opt_state, config=CONFIG)


def test_a_checksummed_checkpoint_with_bad_arrays_is_refused(saved):
    directory, model, opt_state = saved
    name = "model.cell.gates_kernel"

    def poison(arrays):
        x = np.array(arrays[name])
        x.flat[1] = np.nan
        return {**arrays, name: x}

    _rewrite(directory, change_arrays=poison)
    with pytest.raises(ValueError, match=f"array '{name}' holds NaN or infinite values"):
        recurrax.load_checkpoint(directory, model=model, opt_state=opt_state)
    _rewrite(directory, change_arrays=lambda a: {**a, "key": np.zeros(2, np.uint32)})
    with pytest.raises(ValueError, match="array 'key' is not a typed PRNG key"):
        recurrax.load_checkpoint(directory, model=model, opt_state=opt_state)
    _rewrite(directory, change_arrays=lambda a: _without(a, "key"))
    with pytest.raises(ValueError, match="holds no PRNG key"):
        recurrax.load_checkpoint(directory, model=model, opt_state=opt_state)


def test_leftover_temporary_files_are_removed_by_the_next_save(saved):
    directory, model, opt_state = saved
    before = checkpoint_path(directory).read_bytes()
    # What a process killed while writing leaves: the writer's temporary file, half written.
    leftovers = [directory / ".checkpoint.rcx.k3j_x9zq.tmp", directory / ".checkpoint.rcx.a.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(before[: len(before) // 2])
    other = directory / ".weights.rcx.a.tmp"  # another file's: not this writer's to remove
    other.write_bytes(b"x")
    ckpt = recurrax.load_checkpoint(directory, model=model, opt_state=opt_state)
    assert ckpt.step == 17  # the leftovers are not read as the checkpoint
    recurrax.save_checkpoint(
        directory,
        model=model,
        opt_state=opt_state,
        step=18,
        key=jax.random.key(9),
        data_state={"seed": 3},
        config=CONFIG,
    )
    names = sorted(p.name for p in directory.iterdir())
    assert names == [".weights.rcx.a.tmp", "checkpoint.rcx"]
    assert recurrax.load_checkpoint(directory, model=model, opt_state=opt_state).step == 18


def test_a_leftover_temporary_file_is_never_a_checkpoint(tmp_path):
    model, opt_state = _state(jax.random.key(0), steps=0)
    (tmp_path / ".checkpoint.rcx.k3j_x9zq.tmp").write_bytes(b"\0" * 64)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        recurrax.load_checkpoint(tmp_path, model=model, opt_state=opt_state)


def test_save_weights_removes_its_leftover_temporary_files(tmp_path):
    cell = recurrax.GRUCell(3, 2, key=jax.random.key(0))
    path = tmp_path / "cell.safetensors"
    (tmp_path / ".cell.safetensors.zz.tmp").write_bytes(b"half")
    recurrax.save_weights(path, cell)
    assert [p.name for p in tmp_path.iterdir()] == ["cell.safetensors"]
