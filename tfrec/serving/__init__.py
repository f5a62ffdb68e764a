"""Serving: TF Serving configs, a TF-Serving-compatible local server, the gRPC client.

Modules (import the one you need; this package imports nothing eagerly so the
thin client stays light):

* :mod:`tfrec.serving.client`: ``RecommenderClient``, the thin typed gRPC client.
* :mod:`tfrec.serving.server`: ``ModelServer``, the local gRPC (+ REST) server.
* :mod:`tfrec.serving.model_config`: models.config / batching / monitoring files.
* :mod:`tfrec.serving.tfserving`: launching the real ``tensorflow_model_server``.
"""
