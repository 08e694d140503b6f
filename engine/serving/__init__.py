"""The serving wing of ``serve.py``, standing on `engine.inference`: `engine.serving.service` (a queue and the one
inference thread over a `engine.inference.Predictor`), `engine.serving.app` (the HTTP interface, FastAPI) and the
page it serves (``engine/serving/page/index.html``)."""
