"""The interactive scene-graph editor: ``layout2img serve --checkpoint DIR``.

``server.py`` is a small JSON API on the standard library's ``ThreadingHTTPServer`` (no
framework, nothing fetched from the internet); ``static/`` holds the one page it serves.
"""
