"""The cells: the protocol (``base.py``), one module per built-in family (``rnn.py``, ``gru.py``,
``lstm.py``) holding its weights, TF1 names and step math (``recurrence.py`` says what the engine
reads from it), the wrappers (``wrappers.py``) and the built-in cells by name (``registry.py``)."""
