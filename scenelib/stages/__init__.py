"""One module per notebook: what ``notebooks/NN_*.py`` calls, so the notebooks stay a readable narrative."""
