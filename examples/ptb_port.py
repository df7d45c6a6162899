"""TensorFlow's PTB word language model (``ptb_word_lm.py``), ported to recurrax.

The tutorial (tensorflow/models, ``tutorials/rnn/ptb/``) trains a 2-layer LSTM language model:
an embedding, ``BasicLSTMCell(forget_bias=0.0)`` layers in a ``MultiRNNCell`` with
``DropoutWrapper(output_keep_prob=keep_prob)`` in training, ``static_rnn`` over ``num_steps``
words, the final state of each batch carried into the next, a softmax, the loss averaged over
the batch and summed over the steps, SGD with ``tf.clip_by_global_norm`` and a learning rate
decayed per epoch. This file is the same program, part by part; ``docs/tf1-port.md`` sets each
part next to its TF1 lines.

Run:

    python examples/ptb_port.py       # the run of tests/fixtures/tf1/ptb/, compared with TF1's
    python examples/ptb_port.py --data_path simple-examples/data --model small   # PTB itself

The first starts from the checkpoint that TF1 wrote before training
(``tools/make_ptb_fixture.py``), trains on the same token stream and prints the per-epoch
perplexities next to TF1's; the second trains the tutorial's configurations on PTB.
"""

import argparse
import collections
import dataclasses
import json
import pathlib
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import recurrax

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tf1" / "ptb"


@dataclasses.dataclass(frozen=True)
class Config:
    """The tutorial's configuration fields (``SmallConfig``'s values by default)."""

    init_scale: float = 0.1
    learning_rate: float = 1.0
    max_grad_norm: float = 5.0
    num_layers: int = 2
    num_steps: int = 20
    hidden_size: int = 200
    max_epoch: int = 4
    max_max_epoch: int = 13
    keep_prob: float = 1.0
    lr_decay: float = 0.5
    batch_size: int = 20
    vocab_size: int = 10000


CONFIGS = {
    "small": Config(),
    "medium": Config(0.05, 1.0, 5.0, 2, 35, 650, 6, 39, 0.5, 0.8, 20, 10000),
    "large": Config(0.04, 1.0, 10.0, 2, 35, 1500, 14, 55, 0.35, 1 / 1.15, 20, 10000),
}


# --- reader.py ------------------------------------------------------------------------------


def ptb_raw_data(data_path):
    """``reader.ptb_raw_data``: (train, valid, test) word ids and the vocabulary size."""
    path = pathlib.Path(data_path)

    def words(name):
        return (path / name).read_text("utf-8").replace("\n", "<eos>").split()

    counts = collections.Counter(words("ptb.train.txt"))
    ranked = sorted(counts.items(), key=lambda x: (-x[1], x[0]))
    word_to_id = {w: i for i, (w, _) in enumerate(ranked)}
    splits = [
        np.array([word_to_id[w] for w in words(f"ptb.{s}.txt") if w in word_to_id], np.int32)
        for s in ("train", "valid", "test")
    ]
    return (*splits, len(word_to_id))


def ptb_producer(raw_data, batch_size, num_steps):
    """``reader.ptb_producer``: the batches ``(x, y)`` of one epoch, ``[batch_size, num_steps]``
    each, ``y`` being ``x`` shifted by one word; row ``b`` reads its own slice of the data, so
    that the state carried from one batch to the next continues the same text."""
    words = np.asarray(raw_data, np.int32)
    batch_len = len(words) // batch_size
    data = words[: batch_size * batch_len].reshape(batch_size, batch_len)  # a stream per row
    epoch_size = (batch_len - 1) // num_steps
    if epoch_size <= 0:
        raise ValueError(
            f"raw_data holds {len(words)} words, too few for batch_size={batch_size} and "
            f"num_steps={num_steps}: decrease batch_size or num_steps."
        )
    for i in range(epoch_size):
        x = data[:, i * num_steps : (i + 1) * num_steps]
        y = data[:, i * num_steps + 1 : (i + 1) * num_steps + 1]
        yield x, y


# --- PTBModel -------------------------------------------------------------------------------


class PTBModel(eqx.Module):
    """The tutorial's ``PTBModel``: its variables, and the cost of a batch given a state."""

    embedding: jax.Array  # [vocab_size, hidden_size]
    cell: recurrax.MultiRNNCell  # num_layers BasicLSTMCell(hidden_size, forget_bias=0.0)
    softmax_w: jax.Array  # [hidden_size, vocab_size]
    softmax_b: jax.Array  # [vocab_size]

    def __init__(self, config: Config, *, key):
        # TF1: tf.variable_scope("Model", initializer=tf.random_uniform_initializer(-s, s)).
        # BasicLSTMCell's bias keeps its zeros initializer in TF1, and here.
        init = recurrax.random_uniform_initializer(-config.init_scale, config.init_scale)
        size, vocab = config.hidden_size, config.vocab_size
        k_emb, k_w, k_b, *k_cells = jax.random.split(key, 3 + config.num_layers)
        self.embedding = init(k_emb, (vocab, size), jnp.float32)
        self.cell = recurrax.MultiRNNCell(
            [
                recurrax.BasicLSTMCell(size, size, key=k, forget_bias=0.0, kernel_initializer=init)
                for k in k_cells
            ]
        )
        self.softmax_w = init(k_w, (size, vocab), jnp.float32)
        self.softmax_b = init(k_b, (vocab,), jnp.float32)

    @classmethod
    def from_tf1(cls, config: Config, variables, scope="Model"):
        """The model of ``config`` holding TF1's ``variables``. Only its structure is built
        (``eqx.filter_eval_shape``: no weight is drawn), then every array comes from TF1."""
        return eqx.filter_eval_shape(cls, config, key=jax.random.key(0)).load_tf1(variables, scope)

    def load_tf1(self, variables, scope="Model"):
        """This model holding the TF1 variables ``variables`` (a name -> array mapping, as
        ``recurrax.load_tf1_checkpoint`` returns) of a tutorial model saved under ``scope``."""
        cell = recurrax.load_tf1_weights(self.cell, variables, scope=f"{scope}/RNN", strict=False)
        arrays = [jnp.asarray(variables[f"{scope}/{n}"]) for n in ("embedding", "softmax_w")]
        arrays.append(jnp.asarray(variables[f"{scope}/softmax_b"]))
        return eqx.tree_at(
            lambda m: (m.cell, m.embedding, m.softmax_w, m.softmax_b), self, (cell, *arrays)
        )

    def zero_state(self, batch_size):
        """``cell.zero_state(batch_size, tf.float32)``: the state of the first batch."""
        return self.cell.zero_state(batch_size, jnp.float32)

    def training_cell(self, keep_prob, key):
        """The tutorial's ``make_cell()`` layers: each wrapped in ``DropoutWrapper`` in training
        (``keep_prob < 1``). The wrappers draw from ``key``, a fresh one per batch; the runner
        folds the step into it and ``MultiRNNCell`` the layer, so that every step of every
        layer of every batch has its own mask. With ``keep_prob`` 1 the cell is unwrapped."""
        if keep_prob >= 1.0:
            return self.cell
        layers = [
            recurrax.DropoutWrapper(c, output_keep_prob=keep_prob, key=k)
            for c, k in zip(self.cell.cells, jax.random.split(key, len(self.cell.cells)))
        ]
        return recurrax.MultiRNNCell(layers)

    def cost(self, inputs, targets, state, *, keep_prob=1.0, key=None):
        """The tutorial's ``cost`` and ``final_state`` for embedded ``inputs`` [B, T, H],
        ``targets`` [B, T] and the ``state`` carried from the previous batch."""
        batch_size, num_steps, _ = inputs.shape
        if keep_prob < 1.0 and key is None:
            raise TypeError(
                f"keep_prob={keep_prob} drops units, which needs key=, a fresh PRNG key per "
                "batch; got key=None. Evaluate with keep_prob=1.0 (the default)."
            )
        if keep_prob < 1.0:  # inputs = tf.nn.dropout(inputs, keep_prob)
            key, k_in = jax.random.split(key)
            keep = jax.random.bernoulli(k_in, keep_prob, inputs.shape)
            inputs = jnp.where(keep, inputs / jnp.float32(keep_prob), jnp.float32(0))
        cell = self.training_cell(keep_prob, key)
        steps = [inputs[:, t] for t in range(num_steps)]  # tf.unstack(inputs, axis=1)
        outputs, final_state = recurrax.static_rnn(cell, steps, initial_state=state)
        output = jnp.stack(outputs, axis=1)  # [B, T, H]
        logits = output @ self.softmax_w + self.softmax_b  # [B, T, V]
        # sequence_loss(average_across_timesteps=False, average_across_batch=True), summed.
        shifted = logits - jnp.max(logits, axis=-1, keepdims=True)
        target = jnp.take_along_axis(shifted, targets[..., None], axis=-1)[..., 0]
        crossent = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1)) - target  # [B, T]
        loss = jnp.sum(crossent, axis=0) / jnp.float32(batch_size)  # [T]
        return jnp.sum(loss), final_state

    def __call__(self, input_data, targets, state, *, keep_prob=1.0, key=None):
        """``(cost, final_state)`` of a batch of word ids ``input_data`` [B, T]."""
        inputs = self.embedding[input_data]  # tf.nn.embedding_lookup
        return self.cost(inputs, targets, state, keep_prob=keep_prob, key=key)


# --- training -------------------------------------------------------------------------------


def make_optimizer(config: Config, epoch_size: int):
    """``clip_by_global_norm`` then SGD, the learning rate ``learning_rate * lr_decay **
    max(epoch + 1 - max_epoch, 0)`` in epoch ``epoch`` (the tutorial's ``assign_lr``)."""
    rates = [
        config.learning_rate * config.lr_decay ** max(i + 1 - config.max_epoch, 0.0)
        for i in range(config.max_max_epoch)
    ]
    rates = jnp.asarray(rates, jnp.float32)

    def learning_rate(count):
        return rates[jnp.minimum(count // epoch_size, len(rates) - 1)]

    optimizer = optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm), optax.sgd(learning_rate)
    )
    return optimizer, learning_rate


@eqx.filter_jit
def train_step(model, opt_state, x, y, state, key, optimizer, keep_prob):
    """One ``session.run([cost, final_state, train_op])``: ``(model, opt_state, cost,
    final_state, grad_norm)``.

    TF1 differentiates ``embedding_lookup`` into ``IndexedSlices``: one gradient row per word
    of the batch, not one per vocabulary entry, and ``clip_by_global_norm`` takes the norm of
    those rows, so a word seen twice counts twice. The gradient is taken here with respect to
    the looked-up rows to keep that norm; the update then adds each row's step into the
    embedding, as TF1's sparse SGD update does.
    """

    def loss(params):
        model, inputs = params
        return model.cost(inputs, y, state, keep_prob=keep_prob, key=key)

    inputs = model.embedding[x]  # [B, T, H]
    (cost, final_state), (grads, d_inputs) = eqx.filter_value_and_grad(loss, has_aux=True)(
        (model, inputs)
    )
    rows = d_inputs.reshape(-1, d_inputs.shape[-1])  # IndexedSlices values, [B * T, H]
    grads = eqx.tree_at(lambda m: m.embedding, grads, rows)
    grad_norm = optax.tree.norm(grads)  # what tf.clip_by_global_norm returns second
    updates, opt_state = optimizer.update(grads, opt_state)
    embedding = model.embedding.at[x.reshape(-1)].add(updates.embedding)
    updates = eqx.tree_at(lambda m: m.embedding, updates, replace=None)
    model = eqx.tree_at(lambda m: m.embedding, eqx.apply_updates(model, updates), embedding)
    return model, opt_state, cost, final_state, grad_norm


@eqx.filter_jit
def eval_step(model, x, y, state):
    """One ``session.run([cost, final_state])`` of the evaluation model (no dropout)."""
    return model(x, y, state)


def run_epoch(model, data, config, *, opt_state=None, optimizer=None, key=None, log=None):
    """The tutorial's ``run_epoch``: the perplexity over ``data``, training when ``optimizer``
    is given; the final state of each batch is the initial state of the next. Returns
    ``(perplexity, model, opt_state, key)``."""
    costs, iters = np.float32(0.0), 0
    state = model.zero_state(config.batch_size)
    for x, y in ptb_producer(data, config.batch_size, config.num_steps):
        if optimizer is None:
            cost, state = eval_step(model, x, y, state)
        else:
            key, step_key = jax.random.split(key)
            model, opt_state, cost, state, norm = train_step(
                model, opt_state, x, y, state, step_key, optimizer, config.keep_prob
            )
            if log is not None:
                log["losses"].append(np.float32(cost))
                log["grad_norms"].append(np.float32(norm))
        costs += np.float32(cost)
        iters += config.num_steps
    return np.exp(costs / iters), model, opt_state, key


def train(model, config, train_data, valid_data, *, key, verbose=True):
    """The tutorial's ``main`` loop: ``max_max_epoch`` epochs of training, each followed by
    the validation perplexity. Returns ``(model, log)``, ``log`` holding per-step ``losses`` and
    ``grad_norms`` and per-epoch ``learning_rate``, ``train_perplexity``, ``valid_perplexity``."""
    epoch_size = ((len(train_data) // config.batch_size) - 1) // config.num_steps
    optimizer, learning_rate = make_optimizer(config, epoch_size)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    log = {k: [] for k in ("losses", "grad_norms", "learning_rate")}
    log.update(train_perplexity=[], valid_perplexity=[])
    for i in range(config.max_max_epoch):
        log["learning_rate"].append(float(learning_rate(i * epoch_size)))
        train_ppl, model, opt_state, key = run_epoch(
            model, train_data, config, opt_state=opt_state, optimizer=optimizer, key=key, log=log
        )
        valid_ppl, *_ = run_epoch(model, valid_data, config)
        log["train_perplexity"].append(train_ppl)
        log["valid_perplexity"].append(valid_ppl)
        if verbose:
            print(
                f"Epoch {i + 1}: learning rate {log['learning_rate'][-1]:.3f}, train perplexity "
                f"{train_ppl:.3f}, valid perplexity {valid_ppl:.3f}"
            )
    return model, {k: np.asarray(v, np.float32) for k, v in log.items()}


def load_fixture(directory=FIXTURE):
    """The TF1 run of ``tools/make_ptb_fixture.py``: ``(config, train_data, valid_data,
    variables, expected)``, ``variables`` read from its checkpoint as a user would."""
    directory = pathlib.Path(directory)
    config = Config(**json.loads((directory / "config.json").read_text()))
    tokens = np.load(directory / "tokens.npz")
    variables = recurrax.load_tf1_checkpoint(directory)  # TF1's Saver wrote it
    expected = dict(np.load(directory / "expected.npz"))
    return config, tokens["train"], tokens["valid"], variables, expected


def compare_with_tf1(keep_prob=None):
    """Train from TF1's initial checkpoint on its tokens, print the numbers next to TF1's and
    check them; ``(model, log)``. With ``keep_prob < 1`` the masks differ from TF1's (another
    generator), so the numbers agree in distribution only and are printed, not checked."""
    config, train_data, valid_data, variables, tf1 = load_fixture()
    if keep_prob is not None:
        config = dataclasses.replace(config, keep_prob=keep_prob)
    model = PTBModel.from_tf1(config, variables)
    model, log = train(model, config, train_data, valid_data, key=jax.random.key(1))
    exact = config.keep_prob == 1.0
    prefix = "" if exact else "dropout_"
    print(f"keep_prob {config.keep_prob}: perplexity  TF1 (keep_prob {1.0 if exact else 0.5})")
    for i in range(config.max_max_epoch):
        for split in ("train", "valid"):
            theirs, ours = tf1[f"{prefix}{split}_perplexity"][i], log[f"{split}_perplexity"][i]
            print(f"epoch {i + 1} {split}: {ours:.6f}  {theirs:.6f}")
    if exact:
        ulps = np.abs(log["losses"] - tf1["losses"]) / np.spacing(tf1["losses"])
        print(f"per-step losses: at most {ulps.max():.0f} ulp from TF1's")
        np.testing.assert_allclose(log["losses"], tf1["losses"], rtol=1e-6)
        np.testing.assert_allclose(log["valid_perplexity"], tf1["valid_perplexity"], rtol=1e-6)
    return model, log


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_path", help="PTB's simple-examples/data; default: TF1's run")
    parser.add_argument("--model", default="small", choices=sorted(CONFIGS))
    parser.add_argument("--keep_prob", type=float, help="override the configuration's")
    args = parser.parse_args(argv)
    if args.data_path is None:
        compare_with_tf1(args.keep_prob)
        return
    train_data, valid_data, test_data, vocab = ptb_raw_data(args.data_path)
    config = dataclasses.replace(CONFIGS[args.model], vocab_size=vocab)
    if args.keep_prob is not None:
        config = dataclasses.replace(config, keep_prob=args.keep_prob)
    model = PTBModel(config, key=jax.random.key(0))
    model, _ = train(model, config, train_data, valid_data, key=jax.random.key(1))
    # The tutorial tests with batch_size = num_steps = 1; the state carries over all the same.
    test_config = dataclasses.replace(config, batch_size=1, num_steps=1)
    test_ppl, *_ = run_epoch(model, test_data, test_config)
    print(f"Test perplexity: {test_ppl:.3f}")


if __name__ == "__main__":
    # Command-line arguments only when run as a script (not when run by another program).
    script = pathlib.Path(sys.argv[0]).resolve() == pathlib.Path(__file__).resolve()
    main(sys.argv[1:] if script else [])
