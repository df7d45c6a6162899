"""The worked port of TF1's PTB language model (examples/ptb_port.py) against TF1's own run.

fixtures/tf1/ptb/ was written by TensorFlow (tools/make_ptb_fixture.py): the tutorial's model
(embedding, two ``BasicLSTMCell(forget_bias=0.0)`` in ``MultiRNNCell``, ``static_rnn`` over 10
steps, the state carried from batch to batch, ``clip_by_global_norm``, SGD with the learning
rate halved after epoch 1) trained 60 steps (2 epochs) on a synthetic token stream in float32,
from the initial weights it saved with ``Saver``. The port starts from that checkpoint, trains on
the same tokens with ``keep_prob`` 1.0 (the tutorial's small configuration, so no dropout mask
differs between TF and JAX) and must reproduce TF1's numbers step by step.
"""

import importlib.util
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax

# One process runs this file's tests: the port is trained once, by the module fixture.
pytestmark = pytest.mark.xdist_group("tf1_port")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ptb_port.py"


def _ulps(actual, expected):
    """|actual - expected| in units in the last place of ``expected`` (float32)."""
    expected = np.asarray(expected, np.float32)
    return np.abs(np.asarray(actual, np.float64) - expected) / np.spacing(np.abs(expected))


@pytest.fixture(scope="module", autouse=True)
def _on_the_cpu():
    """TF1 trained on a CPU, in float32, and the port matches it to a few ulp there: the port
    runs on the CPU also on a machine with a GPU (whose float32 dots are TF32 by default, and
    whose embedding gradient adds in a nondeterministic order). Module-scoped and autouse, it
    is set up before the module's other fixtures."""
    with jax.default_device(jax.devices("cpu")[0]):
        yield


@pytest.fixture(scope="module")
def port():
    spec = importlib.util.spec_from_file_location("ptb_port", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ptb_port"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("ptb_port", None)


@pytest.fixture(scope="module")
def fixture(port):
    config, train_data, valid_data, variables, tf1 = port.load_fixture()
    model = port.PTBModel.from_tf1(config, variables)
    return config, train_data, valid_data, variables, tf1, model


@pytest.fixture(scope="module")
def run(port):
    """What ``python examples/ptb_port.py`` runs: the port trained from TF1's initial
    checkpoint on TF1's tokens, ``(final model, log)``."""
    return port.compare_with_tf1()


def _final_variables(model):
    """The trained model's variables under the names TF1 gave them."""
    named = recurrax.tf1_weights(model.cell, scope="Model/RNN")
    named.update({f"Model/{n}": np.asarray(getattr(model, n)) for n in ("embedding", "softmax_w")})
    named["Model/softmax_b"] = np.asarray(model.softmax_b)
    return named


def test_the_port_starts_from_tf1s_checkpoint(fixture):
    config, _, _, variables, _, model = fixture
    assert config.keep_prob == 1.0 and config.num_layers == 2 and config.num_steps == 10
    loaded = _final_variables(model)
    trainable = {n: v for n, v in variables.items() if v.dtype == np.float32 and v.ndim}
    assert sorted(loaded) == sorted(trainable)  # the 7 trainable variables, nothing else
    for name, value in loaded.items():
        np.testing.assert_array_equal(value, variables[name], err_msg=name)


def test_every_step_loss_equals_tf1s(run, fixture):
    # Observed: at most 3 ulp at any of the 60 steps (max relative difference 2.2e-7, losses
    # 28-42): float32 roundings differ (XLA's and Eigen's matmuls, sigmoid and tanh), and SGD
    # carries them on, yet they stay at the last bits. 8 ulp leaves room for other CPUs.
    _, log = run
    tf1 = fixture[4]
    assert log["losses"].shape == tf1["losses"].shape == (60,)
    assert _ulps(log["losses"], tf1["losses"]).max() <= 8
    assert tf1["losses"][-10:].mean() < 0.8 * tf1["losses"][0]  # it learned something


def test_clipping_and_learning_rate_are_tf1s(run, fixture):
    # TF1's global norm counts an embedding row once per occurrence of its word (IndexedSlices);
    # the port takes the norm the same way. Observed relative difference: 4e-7.
    config, *_, tf1, _ = fixture
    _, log = run
    np.testing.assert_allclose(log["grad_norms"], tf1["grad_norms"], rtol=1e-6)
    clipped = tf1["grad_norms"] > config.max_grad_norm
    assert 10 <= clipped.sum() <= 50  # clipping is exercised, and so is its absence
    np.testing.assert_array_equal(log["learning_rate"], tf1["learning_rate"])  # [1.0, 0.5]


def test_per_epoch_perplexities_equal_tf1s(run, fixture):
    # Observed: relative differences of at most 5e-7 (1-2 ulp of the perplexity).
    _, log = run
    tf1 = fixture[4]
    for name in ("train_perplexity", "valid_perplexity"):
        assert _ulps(log[name], tf1[name]).max() <= 8, name
    assert tf1["train_perplexity"][-1] < tf1["train_perplexity"][0] < 64  # 64 words: uniform


def test_final_variables_equal_tf1s(run, fixture):
    # After 60 steps, observed: at most 7 ulp of each variable's largest entry (max absolute
    # difference 2.4e-7, on softmax_b, whose entries reach 3.1).
    tf1 = fixture[4]
    final, _ = run
    for name, value in _final_variables(final).items():
        expected = tf1["final|" + name.replace("/", "|")]
        tolerance = 16 * np.spacing(np.abs(expected).max())
        np.testing.assert_allclose(value, expected, rtol=0, atol=tolerance, err_msg=name)


# --- dropout --------------------------------------------------------------------------------


class _Probe(eqx.Module):
    """A layer that outputs ones and keeps the inputs of its last ``steps`` calls as its state,
    so that the dropout masks applied to its inputs and to its outputs can be read."""

    size: int = eqx.field(static=True)
    steps: int = eqx.field(static=True)

    @property
    def input_size(self):
        return self.size

    @property
    def output_size(self):
        return self.size

    @property
    def state_size(self):
        return self.size * self.steps

    def zero_state(self, batch_size, dtype=jnp.float32):
        return jnp.zeros((batch_size, self.state_size), dtype)

    def __call__(self, inputs, state):
        return jnp.ones_like(inputs), jnp.concatenate([state[:, self.size :], inputs], axis=-1)


@eqx.filter_jit
def _masks(model, keep_prob, key, batch=8, size=16, steps=6):
    """The output dropout masks of layers 0 and 1 of the port's training cell at each step,
    ``[steps, batch, size]`` each (kept units hold ``1 / keep_prob``, dropped ones 0)."""
    probes = recurrax.MultiRNNCell([_Probe(size, steps), _Probe(size, steps)])
    cell = eqx.tree_at(lambda m: m.cell, model, probes).training_cell(keep_prob, key)
    inputs = [jnp.ones((batch, size), jnp.float32)] * steps
    outputs, (_, seen_by_layer_1) = recurrax.static_rnn(
        cell, inputs, initial_state=cell.zero_state(batch, jnp.float32)
    )
    layer_0 = seen_by_layer_1.reshape(batch, steps, size).transpose(1, 0, 2)
    return layer_0, jnp.stack(outputs)


def test_training_draws_a_fresh_mask_per_step_layer_and_batch(fixture):
    model = fixture[5]
    layer_0, layer_1 = map(np.asarray, _masks(model, 0.5, jax.random.key(7)))
    for mask in (layer_0, layer_1):
        assert set(np.unique(mask)) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / 0.5
        assert 0.35 < np.mean(mask == 0) < 0.65
        for t in range(1, len(mask)):
            assert not np.array_equal(mask[t], mask[0]), t  # per step
    for t in range(len(layer_0)):
        assert not np.array_equal(layer_0[t], layer_1[t]), t  # per layer
    again_0, again_1 = _masks(model, 0.5, jax.random.key(7))
    np.testing.assert_array_equal(again_0, layer_0)  # a key gives its masks again
    np.testing.assert_array_equal(again_1, layer_1)
    next_0, next_1 = _masks(model, 0.5, jax.random.key(8))  # the next batch's key
    assert not np.array_equal(next_0, layer_0) and not np.array_equal(next_1, layer_1)
    # Evaluation (keep_prob 1): the bare layers, nothing dropped.
    assert model.training_cell(1.0, None) is model.cell
    eval_0, eval_1 = _masks(model, 1.0, None)
    assert np.all(eval_0 == 1.0) and np.all(eval_1 == 1.0)


def test_dropout_changes_the_training_loss_and_evaluation_has_none(port, fixture, run):
    config, train_data, *_ = fixture
    model = run[0]
    x, y = next(port.ptb_producer(train_data, config.batch_size, config.num_steps))
    x, y = x[:, :3], y[:, :3]  # 3 steps are enough here, and compile faster
    state = model.zero_state(config.batch_size)

    @eqx.filter_jit
    def costs(key):  # evaluation (no key, keep_prob 1: what run_epoch evaluates), training
        return model(x, y, state)[0], model(x, y, state, keep_prob=0.5, key=key)[0]

    k1, k2 = jax.random.split(jax.random.key(3))
    plain, first = costs(k1)
    # The LSTM layers still move this loss little (the softmax bias holds the word frequencies),
    # so dropout changes it by little (tens to hundreds of ulp), yet far more than rounding.
    rounding = np.spacing(np.float32(plain))
    assert abs(float(first) - float(plain)) > 8 * rounding
    again_plain, again = costs(k1)
    assert again == first and again_plain == plain  # the masks follow the key
    other_plain, other = costs(k2)
    assert abs(float(other) - float(first)) > 8 * rounding and other_plain == plain


# --- the reader -----------------------------------------------------------------------------


def test_the_reader_numbers_words_and_cuts_batches_as_the_tutorials(port, tmp_path):
    # PTB's layout: a space before and after each line's words.
    (tmp_path / "ptb.train.txt").write_text(" a b c \n b c \n")
    (tmp_path / "ptb.valid.txt").write_text(" c a \n")
    (tmp_path / "ptb.test.txt").write_text(" b zz \n")  # zz is not in the vocabulary: dropped
    train, valid, test, vocab = port.ptb_raw_data(tmp_path)
    # Ids by decreasing count, ties by word: <eos> 0, b 1, c 2, a 3 (reader._build_vocab).
    assert vocab == 4
    assert train.tolist() == [3, 1, 2, 0, 1, 2, 0]
    assert valid.tolist() == [2, 3, 0] and test.tolist() == [1, 0]
    # reader_test.testPtbProducer's data: 2 rows of 5 words, num_steps 2.
    batches = list(port.ptb_producer([4, 3, 2, 1, 0, 5, 6, 1, 1, 1, 1, 0, 3, 4, 1], 3, 2))
    assert [x.tolist() for x, _ in batches] == [[[4, 3], [5, 6], [1, 0]], [[2, 1], [1, 1], [3, 4]]]
    assert [y.tolist() for _, y in batches] == [[[3, 2], [6, 1], [0, 3]], [[1, 0], [1, 1], [4, 1]]]
    with pytest.raises(ValueError, match="holds 4 words, too few for batch_size=2 and num_steps=2"):
        list(port.ptb_producer([1, 2, 3, 4], 2, 2))


def test_training_without_a_key_is_refused(fixture):
    model = fixture[5]
    x = jnp.zeros((2, 3), jnp.int32)
    with pytest.raises(TypeError, match=r"keep_prob=0.5 drops units, which needs key="):
        model(x, x, model.zero_state(2), keep_prob=0.5)
