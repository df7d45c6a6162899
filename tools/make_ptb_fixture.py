"""Write tests/fixtures/tf1/ptb/: TensorFlow's PTB word language model, trained in TF1.

The model is ``ptb_word_lm.py`` of the TensorFlow tutorials (tensorflow/models,
``tutorials/rnn/ptb/``), line by line, in ``tf.compat.v1`` graph mode with TF1's own code paths
(``BasicLSTMCell(forget_bias=0.0)`` in ``MultiRNNCell``, ``DropoutWrapper``, ``static_rnn``,
``clip_by_global_norm``, ``GradientDescentOptimizer``), at a small size and on a synthetic token
stream (PTB itself is not shipped). ``examples/ptb_port.py`` is the same program in recurrax, and
``tests/test_tf1_port.py`` compares the two. Run it where TensorFlow and tf_keras are installed
(TF 2.16+ needs tf_keras for the TF1 cells)::

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu tf-keras
    /tmp/tfenv/bin/python tools/make_ptb_fixture.py

What differs from the tutorial, and why: the data come from ``tokens()`` below (a Markov source
with a fixed seed, so that the loss drops) instead of ``reader.ptb_raw_data``; the batches are
cut in NumPy exactly as ``reader.ptb_producer`` cuts them and fed through placeholders (its
queue runners are gone from TF 2); ``tf.contrib.seq2seq.sequence_loss`` (gone with
``tf.contrib``) is written out as its source computes it; ``rnn_mode`` is ``BASIC`` and the
unrolled loop is ``tf.compat.v1.nn.static_rnn(..., scope="RNN")``, which the tutorial names as
its equivalent and which creates the same variable names; the model is saved with ``Saver``
after initialisation, so that a port can start from the same weights.

Files written:

- ``model.ckpt-0.index``, ``model.ckpt-0.data-00000-of-00001``, ``checkpoint``: the initial
  variables (``Model/embedding``, ``Model/RNN/multi_rnn_cell/cell_<k>/basic_lstm_cell/...``,
  ``Model/softmax_w``, ``Model/softmax_b``, the learning rate ``Model/Variable``,
  ``global_step``), a TF1 checkpoint written by ``tf.compat.v1.train.Saver``;
- ``config.json``: the hyperparameters (the tutorial's ``SmallConfig`` fields, smaller);
- ``tokens.npz``: ``train`` and ``valid``, the token streams (int32);
- ``expected.npz``: with ``keep_prob`` 1.0 (the small configuration's), ``losses`` (the cost of
  every training step, ``[steps]``), ``grad_norms`` (TF1's global gradient norm before clipping,
  ``[steps]``), ``train_perplexity`` and ``valid_perplexity`` (``[epochs]``),
  ``learning_rate`` (``[epochs]``), and every trained variable after the last step under
  ``final|<name>`` (``/`` written ``|``); with ``keep_prob`` 0.5, ``dropout_train_perplexity``
  and ``dropout_valid_perplexity``, for comparison in distribution only (the masks come from
  TF's generator).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tf1" / "ptb"

CONFIG = {
    "init_scale": 0.1,
    "learning_rate": 1.0,
    "max_grad_norm": 1.5,
    "num_layers": 2,
    "num_steps": 10,
    "hidden_size": 32,
    "max_epoch": 1,
    "max_max_epoch": 2,
    "keep_prob": 1.0,
    "lr_decay": 0.5,
    "batch_size": 8,
    "vocab_size": 64,
}
TRAIN_TOKENS = 8 * 301  # 30 steps per epoch: ((len // batch) - 1) // num_steps
VALID_TOKENS = 8 * 51  # 5 steps


def tokens(n: int, vocab: int, seed: int) -> np.ndarray:
    """A Markov chain over ``vocab`` tokens: each token is followed by one of 4 successors,
    drawn with probabilities .5, .25, .15, .1; successors are picked with Zipf's law (token
    ``k`` with weight ``1 / (k + 1)``), so that some tokens are frequent, as words are, and a
    language model learns first the frequencies, then the successors."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, vocab + 1)
    zipf /= zipf.sum()
    successors = np.stack([rng.choice(vocab, 4, replace=False, p=zipf) for _ in range(vocab)])
    probs = np.array([0.5, 0.25, 0.15, 0.1])
    out = np.empty(n, np.int32)
    out[0] = 0
    for i in range(1, n):
        out[i] = successors[out[i - 1], rng.choice(4, p=probs)]
    return out


def ptb_producer(raw_data, batch_size: int, num_steps: int):
    """``reader.ptb_producer`` in NumPy: the same slices, in the same order."""
    data = np.asarray(raw_data, np.int32)
    batch_len = len(data) // batch_size
    data = data[: batch_size * batch_len].reshape(batch_size, batch_len)
    epoch_size = (batch_len - 1) // num_steps
    for i in range(epoch_size):
        x = data[:, i * num_steps : (i + 1) * num_steps]
        y = data[:, i * num_steps + 1 : (i + 1) * num_steps + 1]
        yield x, y


class PTBModel:
    """The tutorial's ``PTBModel`` (``rnn_mode`` BASIC), inputs fed through placeholders."""

    def __init__(self, is_training: bool, config: dict):
        v1 = tf.compat.v1
        self.batch_size = batch_size = config["batch_size"]
        self.num_steps = num_steps = config["num_steps"]
        size = config["hidden_size"]
        vocab_size = config["vocab_size"]
        keep_prob = config["keep_prob"]
        self.input_data = v1.placeholder(tf.int32, [batch_size, num_steps], name="input_data")
        self.targets = v1.placeholder(tf.int32, [batch_size, num_steps], name="targets")

        with tf.device("/cpu:0"):
            embedding = v1.get_variable("embedding", [vocab_size, size], dtype=tf.float32)
            inputs = tf.nn.embedding_lookup(embedding, self.input_data)

        if is_training and keep_prob < 1:
            inputs = v1.nn.dropout(inputs, rate=1 - keep_prob)

        def make_cell():
            cell = v1.nn.rnn_cell.BasicLSTMCell(
                size, forget_bias=0.0, state_is_tuple=True, reuse=not is_training
            )
            if is_training and keep_prob < 1:
                cell = v1.nn.rnn_cell.DropoutWrapper(cell, output_keep_prob=keep_prob)
            return cell

        cell = v1.nn.rnn_cell.MultiRNNCell(
            [make_cell() for _ in range(config["num_layers"])], state_is_tuple=True
        )
        self.initial_state = cell.zero_state(batch_size, tf.float32)
        inputs = tf.unstack(inputs, num=num_steps, axis=1)
        outputs, state = v1.nn.static_rnn(
            cell, inputs, initial_state=self.initial_state, scope="RNN"
        )
        output = tf.reshape(tf.concat(outputs, 1), [-1, size])

        softmax_w = v1.get_variable("softmax_w", [size, vocab_size], dtype=tf.float32)
        softmax_b = v1.get_variable("softmax_b", [vocab_size], dtype=tf.float32)
        logits = v1.nn.xw_plus_b(output, softmax_w, softmax_b)
        logits = tf.reshape(logits, [batch_size, num_steps, vocab_size])
        loss = _sequence_loss(logits, self.targets, tf.ones([batch_size, num_steps]))
        self.cost = tf.reduce_sum(loss)
        self.final_state = state
        if not is_training:
            return

        self.lr = tf.Variable(0.0, trainable=False)
        tvars = v1.trainable_variables()
        grads, self.grad_norm = tf.clip_by_global_norm(
            tf.gradients(self.cost, tvars), config["max_grad_norm"]
        )
        optimizer = v1.train.GradientDescentOptimizer(self.lr)
        self.train_op = optimizer.apply_gradients(
            zip(grads, tvars), global_step=v1.train.get_or_create_global_step()
        )
        self.new_lr = v1.placeholder(tf.float32, shape=[], name="new_learning_rate")
        self.lr_update = v1.assign(self.lr, self.new_lr)


def _sequence_loss(logits, targets, weights):
    """``tf.contrib.seq2seq.sequence_loss(..., average_across_timesteps=False,
    average_across_batch=True)`` as its source computes it."""
    num_classes = tf.shape(logits)[2]
    logits_flat = tf.reshape(logits, [-1, num_classes])
    crossent = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.reshape(targets, [-1]), logits=logits_flat
    )
    crossent *= tf.reshape(weights, [-1])
    crossent = tf.reshape(crossent, [tf.shape(logits)[0], tf.shape(logits)[1]])
    crossent = tf.reduce_sum(crossent, axis=[0])
    total_size = tf.reduce_sum(weights, axis=[0]) + 1e-12
    return crossent / total_size


def run_epoch(session, model, data, eval_op=None, log=None):
    """The tutorial's ``run_epoch``: the final state of a batch is the next one's initial."""
    costs, iters = 0.0, 0
    state = session.run(model.initial_state)
    fetches = {"cost": model.cost, "final_state": model.final_state}
    if eval_op is not None:
        fetches["eval_op"] = eval_op
        fetches["grad_norm"] = model.grad_norm
    for x, y in ptb_producer(data, model.batch_size, model.num_steps):
        feed_dict = {model.input_data: x, model.targets: y}
        for i, (c, h) in enumerate(model.initial_state):
            feed_dict[c] = state[i].c
            feed_dict[h] = state[i].h
        vals = session.run(fetches, feed_dict)
        state = vals["final_state"]
        costs += vals["cost"]
        iters += model.num_steps
        if log is not None:
            log["losses"].append(vals["cost"])
            log["grad_norms"].append(vals["grad_norm"])
    return np.exp(costs / iters)


def train(config: dict, train_data, valid_data, save_dir: Path | None = None) -> dict:
    """The tutorial's ``main``: build, (save,) train ``max_max_epoch`` epochs; the results."""
    v1 = tf.compat.v1
    log = {"losses": [], "grad_norms": [], "learning_rate": []}
    log.update(train_perplexity=[], valid_perplexity=[])
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        initializer = v1.random_uniform_initializer(-config["init_scale"], config["init_scale"])
        train_scope = v1.variable_scope("Model", reuse=None, initializer=initializer)
        with tf.name_scope("Train"), train_scope:
            m = PTBModel(is_training=True, config=config)
        valid_scope = v1.variable_scope("Model", reuse=True, initializer=initializer)
        with tf.name_scope("Valid"), valid_scope:
            mvalid = PTBModel(is_training=False, config=config)
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            if save_dir is not None:
                cwd = os.getcwd()
                os.chdir(save_dir)  # a relative prefix: the state file then names it relatively
                try:
                    saver.save(session, "model.ckpt", global_step=0, write_meta_graph=False)
                finally:
                    os.chdir(cwd)
            for i in range(config["max_max_epoch"]):
                lr_decay = config["lr_decay"] ** max(i + 1 - config["max_epoch"], 0.0)
                session.run(m.lr_update, {m.new_lr: config["learning_rate"] * lr_decay})
                log["learning_rate"].append(session.run(m.lr))
                log["train_perplexity"].append(
                    run_epoch(session, m, train_data, eval_op=m.train_op, log=log)
                )
                log["valid_perplexity"].append(run_epoch(session, mvalid, valid_data))
                print(
                    f"Epoch {i + 1}: learning rate {log['learning_rate'][-1]:.3f}, train "
                    f"perplexity {log['train_perplexity'][-1]:.3f}, valid perplexity "
                    f"{log['valid_perplexity'][-1]:.3f}"
                )
            final = {v.op.name: session.run(v) for v in v1.trainable_variables()}
    result = {k: np.asarray(v, np.float32) for k, v in log.items()}
    result.update({f"final|{name.replace('/', '|')}": value for name, value in final.items()})
    return result


def main() -> None:
    tf.compat.v1.disable_eager_execution()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    vocab = CONFIG["vocab_size"]
    stream = tokens(TRAIN_TOKENS + VALID_TOKENS, vocab, seed=0)
    train_data, valid_data = stream[:TRAIN_TOKENS], stream[TRAIN_TOKENS:]
    (OUT / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    np.savez_compressed(OUT / "tokens.npz", train=train_data, valid=valid_data)

    expected = train(CONFIG, train_data, valid_data, save_dir=OUT)
    dropout = train({**CONFIG, "keep_prob": 0.5}, train_data, valid_data)
    expected["dropout_train_perplexity"] = dropout["train_perplexity"]
    expected["dropout_valid_perplexity"] = dropout["valid_perplexity"]
    np.savez_compressed(OUT / "expected.npz", **expected)
    clipped = int(np.sum(expected["grad_norms"] > CONFIG["max_grad_norm"]))
    print(f"{clipped} of {len(expected['grad_norms'])} steps clipped")
    for path in sorted(OUT.iterdir()):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
