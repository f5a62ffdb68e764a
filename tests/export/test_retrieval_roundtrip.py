"""Every encoder, with item features and a user embedding, survives export.

One fresh Python process (no tfrec import) loads all exports and must return the
same top-K ids and scores as the eager models. The plain tower (ids only) is
exported once, with the default encoder: the extras add inputs around the
encoder, they do not change how it is traced.
"""

import numpy as np
import pytest
import tf_keras as keras
from testing_utils import NUM_ITEMS, check_in_fresh_process, model_test, tiny_vocabs

from tfrec.data.item_features import ItemFeatureTables
from tfrec.layers.encoders import ENCODERS
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel
from tfrec.tasks.config import RetrievalLossConfig


def _features() -> ItemFeatureTables:
    rng = np.random.default_rng(0)
    size = NUM_ITEMS + 2
    genres = (rng.random((size, 3)) < 0.4).astype(np.float32)
    titles = rng.integers(0, 6, size=(size, 3)).astype(np.int32)
    genres[:2] = 0
    titles[:2] = 0
    return ItemFeatureTables(genres, ["g0", "g1", "g2"], titles, ["", "[UNK]", "a", "b", "c", "d"])


@pytest.mark.slow
def test_every_encoder_round_trips_in_a_fresh_process(tmp_path):
    keras.utils.set_random_seed(0)
    users, items = tiny_vocabs()
    cases = []
    plain = RetrievalConfig().encoder  # the default encoder, also without the extras
    for encoder in ENCODERS:
        for with_extras in (False, True) if encoder == plain else (True,):
            config = RetrievalConfig(
                embedding_dim=4,
                encoder=encoder,
                max_history=4,
                num_heads=2,
                use_user_embedding=with_extras,
                use_item_features=with_extras,
            )
            model = TwoTowerModel(
                config, users.size, items.size, item_features=_features() if with_extras else None
            )
            assert model.item_tower.uses_content_features == with_extras
            name = f"{encoder}-{'features-user' if with_extras else 'plain'}"
            cases.append(model_test(model, tmp_path, name=name, fresh_process=False))
    # the lastfm preset's encoder: the default one gated with the mean of the history
    gated = RetrievalConfig(
        embedding_dim=4, max_history=4, num_heads=2, scenario_layers=True, mean_expert=True
    )
    model = TwoTowerModel(gated, users.size, items.size)
    cases.append(model_test(model, tmp_path, name="mean-expert", fresh_process=False))
    check_in_fresh_process(cases, tmp_path)


@pytest.mark.slow
def test_sampled_loss_model_round_trips(tmp_path):
    users, items = tiny_vocabs()
    config = RetrievalConfig(
        embedding_dim=4, encoder="gru", max_history=4, loss=RetrievalLossConfig(kind="sampled")
    )
    model = TwoTowerModel(
        config,
        users.size,
        items.size,
        item_log_probs=np.log(np.full(items.size, 1.0 / items.size)),
    )
    model_test(model, tmp_path)
