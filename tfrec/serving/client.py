"""tfrec's gRPC client: the ``tfrec_client`` distribution (``client/`` in this repository).

One implementation, no TensorFlow: ``tfrec.serving.client`` *is* the module
:mod:`tfrec_client.client` (this module replaces itself in ``sys.modules``), so
``from tfrec.serving.client import RecommenderClient``, the typed errors, and
attributes patched by tests (``_sleep``) all refer to the same objects as
``import tfrec_client``.

Example:
    >>> with RecommenderClient("127.0.0.1:8500", "retrieval") as client:
    ...     recs = client.recommend(user_ids=["42"], histories=[["7", "12"]], k=10)
"""

from __future__ import annotations

import sys

from tfrec_client import client as _implementation

sys.modules[__name__] = _implementation
