"""The applications built on recurrax: the ``recurrax`` command and its helpers.

The library (``import recurrax``) never imports this package, nor what it needs beyond the
library (optax, scikit-learn, matplotlib, rich, torch, flax: each optional, each imported only
by the part that uses it). Its modules:

- :mod:`~recurrax.apps.cli`: the ``recurrax`` command (``demo``, ``train``, ``bench``), its
  options and its one error path; :mod:`~recurrax.apps.options`: what the subcommands share;
- :mod:`~recurrax.apps.demo`: the source article's example and the static/dynamic trade-off;
- :mod:`~recurrax.apps.train`, :mod:`~recurrax.apps.model`, :mod:`~recurrax.apps.data`: the
  trainer (``TrainConfig``, ``train``, ``RecurrentModel``) and its bundled data;
- :mod:`~recurrax.apps.launch`: ``recurrax train --num-processes``: start or join a run of
  several processes (``jax.distributed``);
- :mod:`~recurrax.apps.bench`, :mod:`~recurrax.apps.bench_report`: the benchmark runner shared
  by ``recurrax bench`` and ``benchmarks/``, and the one results format;
- :mod:`~recurrax.apps.progress`, :mod:`~recurrax.apps.plots`: the progress bar and the figures.
"""
