import numpy as np

from recurrax.cli import main


def test_demo_prints_equal_results(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "static_rnn and dynamic_rnn agree: yes" in out
    assert "dynamic_rnn outputs (4, 2, 5)" in out
    assert "static_rnn final state (4, 5)" in out


def test_article_example_matches_basic_rnn_formula():
    import jax
    import jax.numpy as jnp

    import recurrax
    from recurrax._demo import ARTICLE_BATCH as x

    cell = recurrax.BasicRNNCell(num_units=5, input_size=3, key=jax.random.key(42))
    outputs, states = recurrax.dynamic_rnn(cell, x, dtype=jnp.float32)
    k, b = np.asarray(cell.kernel, np.float64), np.asarray(cell.bias, np.float64)
    h = np.zeros((4, 5))
    for t in range(2):
        h = np.tanh(np.concatenate([x[:, t], h], -1) @ k + b)
        np.testing.assert_allclose(outputs[:, t], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(states, h, rtol=1e-5, atol=1e-6)
