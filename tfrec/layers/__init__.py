"""Keras layers: causal history encoders and the item/query towers."""

from tfrec.layers.bert4rec import Bert4RecEncoder
from tfrec.layers.caser import CaserEncoder
from tfrec.layers.encoders import (
    ENCODERS,
    MeanEncoder,
    RNNEncoder,
    TransformerEncoder,
    get_encoder,
)
from tfrec.layers.towers import (
    ItemTower,
    QueryTower,
    compact_history,
    trim_leading_padding,
)
from tfrec.layers.user_tower import UserQueryTower

__all__ = [
    "ENCODERS",
    "Bert4RecEncoder",
    "CaserEncoder",
    "ItemTower",
    "MeanEncoder",
    "QueryTower",
    "RNNEncoder",
    "TransformerEncoder",
    "UserQueryTower",
    "compact_history",
    "get_encoder",
    "trim_leading_padding",
]
