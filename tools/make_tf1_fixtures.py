"""Write the small TF1 checkpoints under tests/fixtures/tf1/ with TensorFlow.

The tests read these files without TensorFlow; this script is how they were made, and is never
imported by the tests. Run it where TensorFlow and tf_keras are installed (TF 2.16+ needs
tf_keras for the TF1 cells)::

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu tf-keras
    TF_USE_LEGACY_KERAS=1 /tmp/tfenv/bin/python tools/make_tf1_fixtures.py

Each of ``single/`` (one data file) and ``sharded/`` (``Saver(sharded=True)`` over two CPU
devices: two data files) holds, next to the checkpoint and its ``checkpoint`` state file:

- ``inputs.npy``: the fixed input ``[batch 2, time 4, 3]`` (float32);
- ``outputs.npy``, ``state_c.npy``, ``state_h.npy``, ``state_gru.npy``: what
  ``tf.compat.v1.nn.dynamic_rnn`` over ``MultiRNNCell([BasicLSTMCell(4), GRUCell(5)])`` returns
  for it, with the saved weights (``sequence_length = [4, 2]``);
- ``expected.npz``: every numeric variable of the checkpoint, as ``tf.train.load_checkpoint``
  reads it (keys are the variable names with ``/`` replaced by ``|``).

``partitioned/`` holds two variables saved in slices by a partitioner (``emb/table`` [5, 3] in
two slices along axis 0, ``emb/wide`` [2, 6] in three along axis 1) and ``expected.npz``.
``tf2/`` holds an object-based ``tf.train.Checkpoint``, which recurrax refuses.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tf1"
INPUTS = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
LENGTHS = np.array([4, 2], np.int32)


def _model(sharded: bool):
    """The graph: two layers, a dense head, Adam; layer 1 on a second device when sharded."""
    v1 = tf.compat.v1
    tf.compat.v1.set_random_seed(1)
    x = v1.placeholder(tf.float32, [None, 4, 3], name="x")
    lstm = v1.nn.rnn_cell.BasicLSTMCell(4)
    gru = v1.nn.rnn_cell.GRUCell(5)
    if sharded:
        lstm = v1.nn.rnn_cell.DeviceWrapper(lstm, "/cpu:0")
        gru = v1.nn.rnn_cell.DeviceWrapper(gru, "/cpu:1")
    cell = v1.nn.rnn_cell.MultiRNNCell([lstm, gru])
    outputs, state = v1.nn.dynamic_rnn(cell, x, sequence_length=LENGTHS, dtype=tf.float32)
    with tf.device("/cpu:1" if sharded else "/cpu:0"):
        prediction = v1.layers.dense(outputs[:, -1], 1)
        tag = v1.Variable(b"recurrax fixture", name="tag", dtype=tf.string)
    loss = tf.reduce_mean(tf.square(prediction - 1.0))
    step = v1.train.get_or_create_global_step()
    train = v1.train.AdamOptimizer(0.05).minimize(loss, global_step=step)
    return x, outputs, state, train, tag


def _write(name: str, sharded: bool) -> None:
    directory = OUT / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    graph = tf.Graph()
    with graph.as_default():
        x, outputs, state, train, _ = _model(sharded)
        saver = tf.compat.v1.train.Saver(sharded=sharded)
        config = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for _ in range(3):  # so that the Adam slots hold something
                sess.run(train, {x: INPUTS})
            out, ((c, h), gru_h) = sess.run([outputs, state], {x: INPUTS})
            cwd = os.getcwd()
            os.chdir(directory)  # a relative prefix: the state file then names it relatively
            try:
                saver.save(sess, "model.ckpt", global_step=3, write_meta_graph=False)
            finally:
                os.chdir(cwd)
    np.save(directory / "inputs.npy", INPUTS)
    np.save(directory / "outputs.npy", out)
    np.save(directory / "state_c.npy", c)
    np.save(directory / "state_h.npy", h)
    np.save(directory / "state_gru.npy", gru_h)
    prefix = str(directory / "model.ckpt-3")
    reader = tf.train.load_checkpoint(prefix)
    expected = {
        n.replace("/", "|"): reader.get_tensor(n)
        for n in reader.get_variable_to_shape_map()
        if reader.get_variable_to_dtype_map()[n] != tf.string
    }
    np.savez_compressed(directory / "expected.npz", **expected)


def _write_partitioned() -> None:
    v1 = tf.compat.v1
    directory = OUT / "partitioned"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    graph = tf.Graph()
    with graph.as_default(), v1.variable_scope("emb"):
        v1.get_variable(
            "table",
            shape=[5, 3],
            initializer=v1.random_normal_initializer(seed=1),
            partitioner=v1.fixed_size_partitioner(2),
        )
        v1.get_variable(
            "wide",
            shape=[2, 6],
            initializer=v1.random_normal_initializer(seed=2),
            partitioner=v1.fixed_size_partitioner(3, axis=1),
        )
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            saver.save(sess, str(directory / "model.ckpt"), write_meta_graph=False)
    (directory / "checkpoint").unlink()  # it names an absolute path; the tests pass the prefix
    reader = tf.train.load_checkpoint(str(directory / "model.ckpt"))
    names = reader.get_variable_to_shape_map()
    np.savez_compressed(
        directory / "expected.npz", **{n.replace("/", "|"): reader.get_tensor(n) for n in names}
    )


def _write_tf2() -> None:
    directory = OUT / "tf2"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    checkpoint = tf.train.Checkpoint(kernel=tf.Variable(np.ones((2, 3), np.float32)))
    checkpoint.write(str(directory / "ckpt"))


def main() -> None:
    _write_tf2()  # eager, before graph mode is switched on
    tf.compat.v1.disable_eager_execution()
    _write("single", sharded=False)
    _write("sharded", sharded=True)
    _write_partitioned()
    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(OUT)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
