"""tfrec_client: a TF Serving gRPC client for tfrec models that needs no TensorFlow.

Depends only on ``grpcio``, ``protobuf`` and ``numpy``. Main class:
:class:`RecommenderClient` (deadlines, retries on UNAVAILABLE, typed errors,
futures); array <-> ``TensorProto`` conversion in :mod:`tfrec_client.tensors`.
"""

from tfrec_client._version import __version__
from tfrec_client.client import RecommenderClient
from tfrec_client.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    ServingError,
    UnavailableError,
)
from tfrec_client.tensors import make_ndarray, make_tensor_proto
from tfrec_client.types import (
    ModelMetadata,
    Recommendations,
    Signature,
    TensorSpec,
    VersionStatus,
)

__all__ = [
    "DeadlineExceededError",
    "InvalidArgumentError",
    "ModelMetadata",
    "NotFoundError",
    "Recommendations",
    "RecommenderClient",
    "ResourceExhaustedError",
    "ServingError",
    "Signature",
    "TensorSpec",
    "UnavailableError",
    "VersionStatus",
    "__version__",
    "make_ndarray",
    "make_tensor_proto",
]
