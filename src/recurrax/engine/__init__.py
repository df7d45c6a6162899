"""The engine: loops, backprop memory strategies, the planner and the fused path.

``dispatch.run_cell`` is its entry point; the runners (``dynamic.py``) call it with options
resolved once (``options.py``). Cells never know which path or strategy runs them.
"""
