# Makes configs/ the package ``layout2img.configs`` in a build (pyproject.toml maps it), so an
# installed layout2img finds its bundled configs with importlib.resources from any folder.
