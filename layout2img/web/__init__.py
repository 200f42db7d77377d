"""The interactive scene-graph editor: ``layout2img serve --checkpoint DIR [--clip DIR]``.

``app.py`` is the FastAPI app (:func:`~.app.create_app`; its request and answer models are in
``models.py``, described at ``/openapi.json`` and ``/docs``), ``guard.py`` what every request
passes through (Host / Origin / Content-Type checks, security headers, the log), ``server.py``
builds the app for a model and runs it under uvicorn; ``service.py`` parses scenes and runs the
model, ``scheduler.py`` gives the model turns and batches concurrent generate requests,
``edits.py`` runs text-guided edits as background jobs, ``styles.py`` gives each class's style
clusters with colour swatches; ``static/`` holds the one page it serves (``app.js``: the graph and
the image, ``edit.js``: region editing, ``styles.js``: restyling), nothing fetched from elsewhere.
"""
