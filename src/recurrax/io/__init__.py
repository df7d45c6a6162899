"""Files and names: TF1 variable names (``tf1.py``), weights (``weights.py``) and training
checkpoints (``checkpoint.py``)."""
