"""Choices users name in the CLI, the web API and the library alike (torch-free)."""

#: Appearance codes of generated objects: ``auto`` = the fitted per-class style clusters when the
#: model has them, else sampled; ``cluster`` = the clusters; ``sample`` = N(0, I).
STYLE_CHOICES = ("auto", "cluster", "sample")
