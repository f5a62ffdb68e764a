"""A trained LSTM ranker with what evaluating, saving or exporting it needs.

:class:`TrainedRanker` is the ranker's trained state: the Keras model, its
config, the data statistics it learned (:class:`~tfrec.models.ranking.RankerDataSpec`),
its vocabularies and item content tables. A saved ranking run keeps the ranker-
specific files beside the common run layout (``config.json``, vocabularies,
``weights/model``): ``data_spec.json`` and, with content features,
``item_features.npz`` (:func:`save_ranker_files`, :func:`load_trained_ranker`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.item_features import ItemFeatureTables, load_item_features, save_item_features
from tfrec.data.vocab import IdVocabulary
from tfrec.layers.towers import ItemTower
from tfrec.models.ranking import LSTMRanker, RankerDataSpec, RankingConfig

#: Ranker files of a saved run, beside the common layout.
DATA_SPEC_FILE = "data_spec.json"
ITEM_FEATURES_FILE = "item_features.npz"


@dataclasses.dataclass
class TrainedRanker:
    """A trained ranker with everything needed to evaluate, save or export it.

    Attributes:
        model: The Keras model.
        config: Its hyper-parameters.
        spec: Vocabulary sizes and signal scales.
        user_vocab: User vocabulary (index = model user input).
        item_vocab: Item vocabulary (index = model item input).
        tables: Item content tables (None when content features are off).
        history: Keras training history (per-epoch logs).
    """

    model: LSTMRanker
    config: RankingConfig
    spec: RankerDataSpec
    user_vocab: IdVocabulary
    item_vocab: IdVocabulary
    tables: ItemFeatureTables | None
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)


def build_ranker(
    config: RankingConfig, spec: RankerDataSpec, tables: ItemFeatureTables | None = None
) -> LSTMRanker:
    """Creates an (untrained) LSTMRanker with the shared ItemTower."""
    tower = ItemTower(
        spec.num_items,
        config.embedding_dim,
        genre_table=tables.genres if tables is not None else None,
        title_table=tables.titles if tables is not None else None,
        title_vocab_size=tables.title_vocab_size if tables is not None else 0,
        l2=config.l2,
        name="item_tower",
    )
    return LSTMRanker(config, spec, item_tower=tower)


def save_ranker_files(trained: TrainedRanker, directory: str | os.PathLike[str]) -> None:
    """Writes ``data_spec.json`` and (with content tables) ``item_features.npz``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    trained.spec.save(out / DATA_SPEC_FILE)
    if trained.tables is not None:
        save_item_features(trained.tables, out / ITEM_FEATURES_FILE)
    elif (out / ITEM_FEATURES_FILE).exists():  # a stale file would add features on reload
        (out / ITEM_FEATURES_FILE).unlink()


def load_trained_ranker(
    directory: str | os.PathLike[str],
    config: RankingConfig,
    *,
    user_vocab: IdVocabulary,
    item_vocab: IdVocabulary,
    weights: str | os.PathLike[str],
    history: dict[str, list[float]] | None = None,
) -> TrainedRanker:
    """Rebuilds a ranker from the files :func:`save_ranker_files` wrote and its weights.

    Args:
        directory: The saved run (``data_spec.json``, optional ``item_features.npz``).
        config: The ranker config it was trained with.
        user_vocab: Its user vocabulary.
        item_vocab: Its item vocabulary.
        weights: TF-format weights prefix (``<run>/weights/model``).
        history: Its training history, if known.

    Raises:
        FileNotFoundError: ``data_spec.json`` or the weights are missing.
    """
    src = Path(directory)
    spec_path = src / DATA_SPEC_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path} not found: expected a saved ranking run")
    if not Path(f"{weights}.index").is_file():
        raise FileNotFoundError(f"{weights}.index not found: the ranker was not saved")
    spec = RankerDataSpec.load(spec_path)
    features = src / ITEM_FEATURES_FILE
    tables = load_item_features(features) if features.is_file() else None
    model = build_ranker(config, spec, tables)
    model.load_weights(str(weights)).expect_partial()
    return TrainedRanker(model, config, spec, user_vocab, item_vocab, tables, dict(history or {}))
