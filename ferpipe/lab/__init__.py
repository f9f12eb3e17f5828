"""The model lab: read labelled faces, train and export classifiers, evaluate and calibrate them.

Kept apart from the pipeline stages (``ferpipe/*.py``): nothing in the pipeline imports the lab,
and the lab's heavier dependencies (torch, scikit-learn) come from the ``[train]`` extra.
"""
