"""Keras layers: causal history encoders and the item/query towers."""

from tfrec.layers.encoders import (
    ENCODERS,
    MeanEncoder,
    RNNEncoder,
    TransformerEncoder,
    get_encoder,
)

__all__ = [
    "ENCODERS",
    "MeanEncoder",
    "RNNEncoder",
    "TransformerEncoder",
    "get_encoder",
]
