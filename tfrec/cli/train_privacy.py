"""``tfrec train``'s DP-SGD flags: the ``--dp-*`` argument group and its config mapping.

The flags set ``training.privacy`` (:class:`~tfrec.training.privacy_config.PrivacyConfig`)
of the kind's model section (a pipeline: both stages); :func:`check` refuses them
for a kind whose training does not implement DP-SGD.
"""

from __future__ import annotations

import argparse
from typing import Any

#: DP-SGD flags -> ``training.privacy`` fields, every kind (a pipeline: both stages).
PRIVACY_FLAGS = {
    "dp_noise_multiplier": "training.privacy.noise_multiplier",
    "dp_l2_clip": "training.privacy.l2_clip",
    "dp_microbatches": "training.privacy.microbatches",
    "dp_delta": "training.privacy.delta",
    "dp_target_epsilon": "training.privacy.target_epsilon",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """DP-SGD flags (:mod:`tfrec.training.privacy`; ``PRIVACY_FLAGS`` maps them)."""
    group = parser.add_argument_group(
        "differential privacy (DP-SGD; metrics.json gets privacy/epsilon at privacy/delta)"
    )
    group.add_argument(
        "--dp-noise-multiplier",
        type=float,
        metavar="SIGMA",
        help="train with DP-SGD: Gaussian noise of std SIGMA * clip on each summed gradient",
    )
    group.add_argument(
        "--dp-l2-clip", type=float, metavar="C", help="clip norm of each example's gradient (1.0)"
    )
    group.add_argument(
        "--dp-microbatches",
        type=int,
        metavar="K",
        help="microbatches per batch, dividing --batch-size (default: per-example clipping)",
    )
    group.add_argument(
        "--dp-delta", type=float, help="delta of the reported epsilon (default 1/training examples)"
    )
    group.add_argument(
        "--dp-target-epsilon",
        type=float,
        metavar="EPS",
        help="train with DP-SGD, the noise multiplier picked so the planned epochs spend EPS",
    )


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The given ``--dp-*`` flags as ``{config path: value}`` overrides of a model section."""
    return {f: getattr(args, a) for a, f in PRIVACY_FLAGS.items() if getattr(args, a) is not None}


def check(kind: str, section: Any) -> None:
    """Refuses DP-SGD settings for a kind whose training does not implement DP-SGD.

    Args:
        kind: The experiment kind (``--model``).
        section: The kind's model config section (its ``training.privacy`` is read;
            None or a section without one: nothing to check).

    Raises:
        ValueError: ``training.privacy`` is on and ``kind`` is not in ``DP_KINDS``.
    """
    from tfrec.training.privacy_config import DP_KINDS, DP_REFUSED  # noqa: PLC0415

    privacy = getattr(getattr(section, "training", None), "privacy", None)
    if privacy is not None and privacy.enabled and kind not in DP_KINDS:
        reason = f" ({DP_REFUSED[kind]})" if kind in DP_REFUSED else ""
        raise ValueError(
            f"--model {kind}: DP-SGD (--dp-* / training.privacy) is not supported for this "
            f"kind{reason}; expected one of {list(DP_KINDS)}"
        )
