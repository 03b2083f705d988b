"""Image classifiers: the architectures by name, their fitting, evaluation and export."""
