"""The ``omnisila`` evaluate module folder: ``evaluate.load("evaluate_metrics/omnisila", "implicit")``.

The folder holds the module script (``omnisila.py``) and its metric card (``README.md``); this file only makes the
folder ship with the package (``evaluate_metrics.space.export_space`` reads both from here).
"""
