"""The interactive scene-graph editor: ``layout2img serve --checkpoint DIR [--clip DIR]``.

``server.py`` is a small JSON API on the standard library's ``ThreadingHTTPServer`` (no
framework, nothing fetched from the internet); ``service.py`` parses requests and runs the
model, ``edits.py`` runs text-guided edits as background jobs, ``styles.py`` gives each
class's style clusters with colour swatches; ``static/`` holds the one page it serves
(``app.js``: the graph and the image, ``edit.js``: region editing, ``styles.js``: restyling).
"""
