"""Deployment: a self-contained bundle per recommended model (``bundle``), the preprocessing it shares with
the pipeline (``preprocess``), the runtime that classifies images with it (``runtime``, also the bundle's
``predict.py``) and the ``scenelib predict`` command (``cli``)."""
