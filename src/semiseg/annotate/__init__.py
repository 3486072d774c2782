"""``semiseg annotate``: interactive annotation in the browser. :mod:`.session` holds the image,
the drawing's versions and the propagation (no web code); :mod:`.server` serves the page in
``static/`` (niivue from npm) and the session's API on 127.0.0.1 with FastAPI and uvicorn."""
