"""Synthetic interactions with planted structure that models can learn and tests can check.

The generator plants three signals:

* **Genres.** Item ``i`` (id ``"i<i>"``) belongs to genre ``i % num_genres``.
  Its title is ``"Item <i> <genre word>"`` (e.g. ``"Item 17 jazz"``) and its
  ``genres`` list is ``[<genre word>]``, so title tokens correlate with genre.
* **User taste.** Each user prefers one or two genres (the ``genres`` column
  of :attr:`Interactions.users`). Ratings (1..5) are
  ``round(2 + 2 * [item genre is preferred] + noise)``, clipped.
* **Sequences.** Each user's items follow a within-genre Markov chain: with
  probability ``p_successor`` the next item is the *successor* of the current
  one (:func:`successor`: the next item of the same genre, ``i + num_genres``,
  wrapping around), with probability ``p_noise`` a uniformly random item, else
  a popular item of a preferred genre (Zipf-like popularity inside a genre).
  A user never repeats an item (when the chosen item was already seen, an
  unseen item of a preferred genre is taken instead), so held-out targets are
  never hidden by history masking. Sequence models therefore beat popularity.

Timestamps strictly increase within a user (seconds, starting near
``start_time``). Optionally ``num_cold_items`` extra catalogue items (ids after
the others, same genre rule) have no interactions (cold start). The output is
a pure function of the arguments (``seed`` included).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfrec.data.interactions import Interactions

GENRE_WORDS = (
    "jazz",
    "rock",
    "drama",
    "comedy",
    "sport",
    "science",
    "travel",
    "cooking",
    "history",
    "poetry",
    "horror",
    "fantasy",
)


def genre_name(genre: int) -> str:
    """The word used for genre index ``genre`` (``genre<g>`` past the word list)."""
    return GENRE_WORDS[genre] if genre < len(GENRE_WORDS) else f"genre{genre}"


def successor(item: int, num_items: int, num_genres: int) -> int:
    """The planted successor of item index ``item``: the next item of its genre, wrapping.

    Args:
        item: Item index in ``[0, num_items)``.
        num_items: Number of interacted items.
        num_genres: Number of genres (item ``i`` has genre ``i % num_genres``).

    Returns:
        ``item + num_genres`` if that is below ``num_items``, else the first
        item of the same genre (``item % num_genres``).
    """
    nxt = item + num_genres
    return nxt if nxt < num_items else item % num_genres


def _check_args(
    *,
    num_users: int,
    num_items: int,
    num_genres: int,
    min_len: int,
    max_len: int,
    p_successor: float,
    p_noise: float,
    num_cold_items: int,
) -> None:
    if num_users < 1:
        raise ValueError(f"num_users must be >= 1, got {num_users}")
    if not 1 <= num_genres <= num_items:
        raise ValueError(f"num_genres must be in [1, num_items={num_items}], got {num_genres}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if min_len > num_items:
        raise ValueError(
            f"min_len={min_len} exceeds num_items={num_items}; users never repeat an item"
        )
    if p_successor < 0 or p_noise < 0 or p_successor + p_noise > 1:
        raise ValueError(
            f"need p_successor >= 0, p_noise >= 0 and p_successor + p_noise <= 1, "
            f"got p_successor={p_successor}, p_noise={p_noise}"
        )
    if num_cold_items < 0:
        raise ValueError(f"num_cold_items must be >= 0, got {num_cold_items}")


def make_synthetic(  # noqa: PLR0917  (the documented positional signature)
    num_users: int = 200,
    num_items: int = 60,
    num_genres: int = 4,
    min_len: int = 5,
    max_len: int = 30,
    seed: int = 0,
    *,
    p_successor: float = 0.7,
    p_noise: float = 0.1,
    num_cold_items: int = 0,
    start_time: int = 1_600_000_000,
    name: str = "synthetic",
) -> Interactions:
    """Generates interactions with planted genre, taste and sequence structure.

    Args:
        num_users: Users (ids ``"u0"``, ``"u1"``, ...).
        num_items: Items that can be interacted with (ids ``"i0"``, ...).
        num_genres: Genres; item ``i`` has genre ``i % num_genres``.
        min_len: Shortest user sequence.
        max_len: Longest user sequence (capped at ``num_items``).
        seed: Random seed; equal arguments give identical output.
        p_successor: Probability that the next item is the current item's successor.
        p_noise: Probability that the next item is uniformly random.
        num_cold_items: Extra catalogue items without interactions.
        start_time: Unix seconds around which the first events happen.
        name: Dataset name.

    Returns:
        Interactions with ratings, increasing timestamps, an item table
        (``title``, ``genres``; cold items included) and a user table whose
        ``genres`` column lists each user's preferred genre words.

    Raises:
        ValueError: Inconsistent sizes or probabilities (the message names them).
    """
    _check_args(
        num_users=num_users,
        num_items=num_items,
        num_genres=num_genres,
        min_len=min_len,
        max_len=max_len,
        p_successor=p_successor,
        p_noise=p_noise,
        num_cold_items=num_cold_items,
    )
    rng = np.random.default_rng(seed)
    frame, user_genres = _user_events(
        rng,
        num_users=num_users,
        num_items=num_items,
        num_genres=num_genres,
        lengths=(min_len, min(max_len, num_items)),
        p_successor=p_successor,
        p_noise=p_noise,
        start_time=start_time,
    )
    catalogue = np.arange(num_items + num_cold_items)
    item_table = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in catalogue],
            "title": [f"Item {i} {genre_name(i % num_genres)}" for i in catalogue],
            "genres": [[genre_name(i % num_genres)] for i in catalogue],
        }
    )
    user_table = pd.DataFrame(
        {"user_id": [f"u{u}" for u in range(num_users)], "genres": user_genres}
    )
    return Interactions.from_frame(
        frame,
        items=item_table,
        name=name,
        has_ratings=True,
        has_timestamps=True,
        users=user_table,
    )


def _user_events(
    rng: np.random.Generator,
    *,
    num_users: int,
    num_items: int,
    num_genres: int,
    lengths: tuple[int, int],
    p_successor: float,
    p_noise: float,
    start_time: int,
) -> tuple[pd.DataFrame, list[list[str]]]:
    """Every user's events, user after user (draws in a fixed order, so output is seeded).

    Args:
        rng: The generator.
        num_users: Users (ids ``"u0"``, ...).
        num_items: Items that can be interacted with.
        num_genres: Genres; item ``i`` has genre ``i % num_genres``.
        lengths: Shortest and longest sequence (the longest at most ``num_items``).
        p_successor: Probability that the next item is the current item's successor.
        p_noise: Probability that the next item is uniformly random.
        start_time: Unix seconds around which the first events happen.

    Returns:
        The events (``user_id``, ``item_id``, ``timestamp``, ``rating``) and, per
        user, the words of their preferred genres.
    """
    genre_of = np.arange(num_items) % num_genres
    # Zipf-like popularity inside each genre: the k-th item of a genre has weight 1/(k+1).
    weight = 1.0 / (np.arange(num_items) // num_genres + 1.0)
    users, items, times, ratings, user_genres = [], [], [], [], []
    for u in range(num_users):
        preferred = rng.choice(num_genres, size=min(num_genres, rng.integers(1, 3)), replace=False)
        liked = np.isin(genre_of, preferred)
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        seq = _walk(
            rng, liked, length, weight, num_genres, p_successor=p_successor, p_noise=p_noise
        )
        noise = rng.normal(0.0, 0.75, size=len(seq))
        rating = np.clip(np.rint(2.0 + 2.0 * liked[seq] + noise), 1, 5)
        gaps = 1 + rng.exponential(3600.0, size=len(seq)).astype(np.int64)
        start = start_time + int(rng.integers(0, 30 * 86400))
        users.extend([f"u{u}"] * len(seq))
        items.extend(f"i{i}" for i in seq)
        times.append(start + np.cumsum(gaps))
        ratings.append(rating)
        user_genres.append([genre_name(int(g)) for g in sorted(preferred)])
    frame = pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": np.concatenate(times),
            "rating": np.concatenate(ratings),
        }
    )
    return frame, user_genres


def _walk(
    rng: np.random.Generator,
    liked: np.ndarray,
    length: int,
    weight: np.ndarray,
    num_genres: int,
    *,
    p_successor: float,
    p_noise: float,
) -> np.ndarray:
    """One user's item sequence: successor steps, noise, popular liked items; no repeats.

    Args:
        rng: The generator (draws happen in a fixed order, so output is seeded).
        liked: ``[I]`` bool, items of the user's preferred genres.
        length: Sequence length.
        weight: ``[I]`` popularity weights.
        num_genres: Genres (the successor map depends on it).
        p_successor: Probability of the current item's successor.
        p_noise: Probability of a uniformly random item.

    Returns:
        ``[length]`` item indices.
    """
    num_items = len(weight)
    seen = np.zeros(num_items, dtype=bool)

    def popular(pool: np.ndarray) -> int:
        mask = pool & ~seen
        if not mask.any():
            mask = ~seen
        p = weight * mask
        return int(rng.choice(num_items, p=p / p.sum()))

    current = popular(liked)
    sequence = [current]
    seen[current] = True
    for _ in range(length - 1):
        draw = rng.random()
        if draw < p_successor:
            nxt = successor(current, num_items, num_genres)
        elif draw < p_successor + p_noise:
            nxt = int(rng.integers(num_items))
        else:
            nxt = popular(liked)
        if seen[nxt]:
            nxt = popular(liked)
        sequence.append(nxt)
        seen[nxt] = True
        current = nxt
    return np.asarray(sequence)
