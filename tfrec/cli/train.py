"""``tfrec train``: train, evaluate and export a model in one command."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tfrec.cli.common import (
    add_data_arguments,
    apply_overrides,
    data_overrides,
    parse_set_options,
)

logger = logging.getLogger(__name__)

#: ``--eval-mask`` choices: ``tfrec.training.experiment.EVAL_MASKS`` (not imported
#: here so that ``tfrec --help`` stays instant; a test keeps the two equal).
EVAL_MASK_CHOICES = ("history", "none", "both")
EVAL_MASK_HELP = (
    "how each user's history is treated in evaluation. history: removed from the ranking "
    "like the exported model does, a held-out item that repeats a history item is a miss "
    "(keys test/...); none: history items stay rankable, for repeat-consumption data such as "
    "music or groceries (keys test_unmasked/...); both: the two reports. Every test user is "
    "in the denominator; metrics.json counts masked_target_users"
)

MODEL_FLAGS = {
    "encoder": "encoder",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "embedding_dim": "embedding_dim",
    "max_history": "max_history",
    "loss": "loss",
    "patience": "patience",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train + evaluate + export a model",
        description=(
            "Train a model on a dataset, evaluate it with full ranking over the whole catalogue "
            "(validation NDCG@10 early stopping, test metrics), and export a TF Serving "
            "SavedModel. Writes OUT/config.json, OUT/metrics.json (flat keys such as "
            "test/ndcg@10), vocabularies, weights, TensorBoard logs and "
            "OUT/export/<model_name>/<version>/."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        choices=("retrieval", "ranking", "pipeline"),
        default="retrieval",
        help=(
            "retrieval: two-tower model; ranking: LSTM ranker; pipeline: retrieval + ranker "
            "with retrieval-only vs two-stage metrics and the combined recommender export"
        ),
    )
    add_data_arguments(parser)
    parser.add_argument("--output-dir", required=True, help="where everything is written")
    parser.add_argument(
        "--config", help="a config.json from an earlier run to start from (flags override it)"
    )
    parser.add_argument(
        "--prepared",
        metavar="DIR",
        help=(
            "train from the sharded TFRecords of a `tfrec prepare` directory (streamed, for data "
            "larger than memory); its split and vocabularies are used"
        ),
    )
    model = parser.add_argument_group("model (defaults: the dataset's preset)")
    model.add_argument(
        "--encoder",
        choices=("mean", "gru", "lstm", "transformer", "none"),
        help=(
            "history encoder of the query tower; none = ID-only two-tower (query = user "
            "embedding, no history; needs --set use_user_embedding=true unless the preset has it)"
        ),
    )
    model.add_argument("--epochs", type=int, help="maximum epochs (early stopping may stop sooner)")
    model.add_argument("--batch-size", type=int)
    model.add_argument("--learning-rate", type=float)
    model.add_argument("--embedding-dim", type=int)
    model.add_argument("--max-history", type=int, help="history length L")
    model.add_argument("--loss", choices=("full", "sampled"), help="full or in-batch softmax")
    model.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    model.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any other model config field, e.g. --set dropout=0.3 --set num_layers=2",
    )
    model.add_argument(
        "--fusion-weights",
        metavar="W1,W2,...",
        help=(
            "pipeline: score-fusion weights tried on the validation part (final score = "
            "ranker + w * retrieval score); the best is exported (default "
            "0,0.5,1,2,3,5,10; 'none' keeps --set retrieval_weight)"
        ),
    )
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument(
        "--sampled-negatives",
        type=int,
        help="also report the sampled protocol with N negatives (papers' protocol)",
    )
    parser.add_argument(
        "--eval-mask",
        choices=EVAL_MASK_CHOICES,
        help=f"{EVAL_MASK_HELP} (default: the dataset's preset, history for most)",
    )


def _retrieval_config(args: argparse.Namespace):
    from tfrec.training.retrieval import RetrievalExperimentConfig  # noqa: PLC0415

    if args.config:
        config = RetrievalExperimentConfig.load(args.config)
        if args.dataset is not None:
            config.data = apply_overrides(config.data, {"dataset": args.dataset})
    elif args.dataset is None and args.prepared:
        from tfrec.data.preparation import PrepareConfig  # noqa: PLC0415

        prepared = PrepareConfig.load(Path(args.prepared) / "prepare_config.json")
        config = RetrievalExperimentConfig.for_dataset(prepared.data.dataset)
        config.data = prepared.data
    elif args.dataset is None:
        raise ValueError("--dataset is required (or --config with a saved config.json)")
    else:
        config = RetrievalExperimentConfig.for_dataset(args.dataset)
    model_overrides = {
        field: getattr(args, flag)
        for flag, field in MODEL_FLAGS.items()
        if getattr(args, flag) is not None
    }
    model_overrides.update(parse_set_options(args.set))
    if args.seed is not None:
        model_overrides["seed"] = args.seed
    config.data = apply_overrides(config.data, data_overrides(args))
    if args.prepared:
        config.prepared_dir = str(args.prepared)
    config.model = apply_overrides(config.model, model_overrides)
    evaluation = {"sampled_negatives": args.sampled_negatives, "mask": args.eval_mask}
    config.evaluation = apply_overrides(
        config.evaluation, {key: value for key, value in evaluation.items() if value is not None}
    )
    return config


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec train``."""
    output_dir = Path(args.output_dir)
    if args.model != "retrieval":
        if args.eval_mask is not None:
            raise ValueError(
                f"--eval-mask: supported with --model retrieval only, got --model {args.model} "
                "(set evaluation.mask in a --config file for the pipeline's retrieval stage)"
            )
        from tfrec.cli.train_ranking import run_ranking  # noqa: PLC0415

        return run_ranking(args, output_dir)
    from tfrec.training.retrieval import RetrievalExperiment  # noqa: PLC0415

    config = _retrieval_config(args)
    experiment = RetrievalExperiment(config, output_dir=output_dir)
    experiment.fit()
    metrics = experiment.evaluate()
    experiment.save(output_dir)
    if not args.no_export:
        path = experiment.export(output_dir / "export")
        print(f"export: {path}")
    keys = [
        k
        for k in metrics
        if k.startswith(("test/", "test_unmasked/")) and k.endswith(("@10", "mrr"))
    ]
    print(json.dumps({k: round(metrics[k], 4) for k in keys}, indent=2))
    print(f"wrote {output_dir / 'config.json'} and {output_dir / 'metrics.json'}")
    return 0
