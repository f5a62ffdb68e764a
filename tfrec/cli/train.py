"""``tfrec train``: train + evaluate + export a model.

Train a model on a dataset, evaluate it with full ranking over the whole catalogue
(validation early stopping with the best epoch restored, test metrics), and export TF
Serving SavedModels. Writes OUT/config.json, OUT/metrics.json (flat keys such as
test/ndcg@10), vocabularies, weights/ (best epoch), checkpoints/last (for --resume),
TensorBoard logs and OUT/export/<model_name>/<version>/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from tfrec.cli import train_privacy, train_workers
from tfrec.cli.common import (
    EVAL_MASK_HELP,
    add_command,
    add_data_arguments,
    apply_overrides,
    data_overrides,
    parse_set_options,
    parse_weights,
)
from tfrec.cli.train_privacy import PRIVACY_FLAGS  # noqa: F401  (re-export)
from tfrec.config import choices
from tfrec.names import EvalMask, ExperimentKind, HistoryEncoder, RetrievalLoss, ScenarioSelection
from tfrec.training import parameter_server_cli

logger = logging.getLogger(__name__)

#: Model flags -> config fields, per kind: (config section, {flag: field}). Ranking
#: and pipeline runs set the ranker; a pipeline's retrieval stage takes
#: RETRIEVAL_STAGE_FLAGS (and --epochs) as well.
MODEL_FLAGS = {
    "encoder": "encoder",
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "learning_rate": "optimizer.learning_rate",
    "embedding_dim": "embedding_dim",
    "max_history": "max_history",
    "loss": "loss.kind",
    "patience": "training.patience",
    "strategy": "training.strategy",
}
RANKING_FLAGS = {
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "learning_rate": "optimizer.learning_rate",
    "embedding_dim": "embedding_dim",
    "max_history": "max_history",
    "patience": "training.patience",
    "strategy": "training.strategy",
}
MODEL_SECTIONS: dict[str, tuple[str, dict[str, str]]] = {
    "retrieval": ("model", MODEL_FLAGS),
    "ranking": ("ranking", RANKING_FLAGS),
    "pipeline": ("ranking", RANKING_FLAGS),
    "multi_scenario": ("model", MODEL_FLAGS),
    # matrix factorisation: no history (--max-history does not apply)
    "mf": ("ranking", {k: v for k, v in RANKING_FLAGS.items() if k != "max_history"}),
    # LightGCN: --set loss=bpr|softmax, num_layers=3, l2=1e-4 (--loss is the two-tower's)
    "lightgcn": ("model", RANKING_FLAGS),
    # EASE: closed form, no epochs: --set l2_grid=[100,500], l2=500, refit_on_valid=false
    "ease": ("model", {"max_history": "max_history"}),
}
RETRIEVAL_STAGE_FLAGS = {"pipeline": ("retrieval", ("encoder", "loss", "epochs"))}
SUMMARY_SUFFIXES = ("@10", "mrr", "rmse", "mae", "auc")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``train`` subcommand."""
    parser = add_command(subparsers, "train", __doc__)
    parser.add_argument(
        "--model",
        choices=choices(ExperimentKind),
        help=(
            "retrieval: two-tower model; ranking: LSTM ranker; pipeline: retrieval + ranker "
            "with retrieval-only vs two-stage metrics and the combined recommender export; "
            "mf: matrix factorisation of the ratings (biased MF; --set variant=pmf, "
            "--set nonnegative=true), served with the ranking signature; "
            "lightgcn: graph retrieval (LightGCN; --set loss=softmax, --set num_layers=2) "
            "served with the retrieval signature; "
            "ease: EASE closed-form item-item retrieval (lambda chosen on validation from "
            "--set l2_grid=[...]) served with the retrieval signature "
            "(default: the kind of --config / of the run being resumed, else retrieval)"
        ),
    )
    add_data_arguments(parser)
    _add_scenario_arguments(parser)
    parser.add_argument("--output-dir", required=True, help="where everything is written")
    parser.add_argument(
        "--config", help="a config.json from an earlier run to start from (flags override it)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=(
            "continue an interrupted run in --output-dir from its checkpoints/last (its "
            "config.json is the starting config; flags such as --epochs override it)"
        ),
    )
    parser.add_argument(
        "--prepared",
        metavar="DIR",
        help=(
            "train from the sharded TFRecords of a `tfrec prepare` directory (streamed, for data "
            "larger than memory); its split and vocabularies are used"
        ),
    )
    _add_model_arguments(parser)
    train_privacy.add_arguments(parser)
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument(
        "--sampled-negatives",
        type=int,
        help="also report the sampled protocol with N negatives (papers' protocol)",
    )
    parser.add_argument(
        "--eval-mask",
        choices=choices(EvalMask),
        help=f"{EVAL_MASK_HELP} (default: the dataset's preset, history for most)",
    )
    train_workers.add_arguments(parser)
    parser.add_argument(
        "--eval-users",
        type=int,
        metavar="N",
        help=(
            "evaluate a seeded sample of N users per part and report a 95%% confidence "
            "interval per metric (default: every user)"
        ),
    )


def _add_scenario_arguments(parser: argparse.ArgumentParser) -> None:
    """The multi-scenario flags (``--scenarios`` and how the scenarios are mixed)."""
    parser.add_argument(
        "--scenarios",
        metavar="A,B,...",
        help=(
            "train ONE model for several scenarios (datasets, e.g. beauty,sports,lastfm,"
            "ml-latest-small): a shared history encoder, each scenario's own item embeddings, "
            "scenario layers and softmax over its own catalogue; metrics per scenario "
            "(beauty/test/ndcg@10, ...), one servable per scenario (--model multi_scenario)"
        ),
    )
    parser.add_argument(
        "--scenario-weights",
        metavar="W1,W2,...",
        help="relative sampling weight of each scenario's batches (default: see the docs)",
    )
    parser.add_argument(
        "--scenario-selection",
        choices=choices(ScenarioSelection),
        help=(
            "scenario (default): each scenario is evaluated and exported at its own best "
            "validation epoch, training stops when none has improved for --patience epochs; "
            "mean: one best epoch for all, that of the mean over scenarios"
        ),
    )
    parser.add_argument(
        "--scenario-user-embeddings",
        metavar="yes,no,...",
        help=(
            "per scenario, whether its query tower has its own user embedding "
            "(default: the scenario's preset: yes for MovieLens, no for the S3-Rec releases)"
        ),
    )
    parser.add_argument(
        "--scenario-mean-experts",
        metavar="yes,no,...",
        help=(
            "per scenario, whether its encoder output is gated with the running mean of its "
            "history (default: yes for lastfm and ml-latest-small, where it won on validation)"
        ),
    )
    parser.add_argument(
        "--scenario-max-histories",
        metavar="L1,L2,...",
        help=(
            "per scenario, how many recent items its query reads (default: --max-history for "
            "all); the shared encoder's positions cover the longest"
        ),
    )


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model flags (``MODEL_SECTIONS`` maps them onto each kind's config)."""
    model = parser.add_argument_group("model (defaults: the dataset's preset)")
    model.add_argument(
        "--encoder",
        choices=choices(HistoryEncoder),
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
    model.add_argument("--loss", choices=choices(RetrievalLoss), help="full or in-batch softmax")
    model.add_argument(
        "--patience", type=int, help="early-stopping patience in epochs (every kind)"
    )
    model.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=(
            "any other model config field, e.g. --set dropout=0.3 --set num_layers=2; "
            "optimizer and training-loop fields by path or by their own name "
            "(--set training.mixed_precision=true, --set weight_decay=1e-4)"
        ),
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


def _base_config(args: argparse.Namespace) -> tuple[str, Any]:
    """The kind and starting config: --config, the resumed run's, --prepared's or the preset."""
    from tfrec.training.experiment import RunLayout, experiment_class, read_kind  # noqa: PLC0415

    saved = args.config or (RunLayout(Path(args.output_dir)).config if args.resume else None)
    default = "multi_scenario" if args.scenarios else "retrieval"
    kind = args.model or (read_kind(saved) if saved else default)
    cls = experiment_class(kind)
    if kind == "multi_scenario" or args.scenarios:
        return kind, _scenarios_config(args, kind, cls, saved)
    scenario_flags = {
        "--scenario-weights": args.scenario_weights,
        "--scenario-selection": args.scenario_selection,
        "--scenario-user-embeddings": args.scenario_user_embeddings,
        "--scenario-mean-experts": args.scenario_mean_experts,
        "--scenario-max-histories": args.scenario_max_histories,
    }
    given = [flag for flag, value in scenario_flags.items() if value]
    if given:
        raise ValueError(f"{', '.join(given)}: only for a multi-scenario run (--scenarios a,b,...)")
    if saved:
        config = cls.config_class.load(saved)
        if args.dataset is not None:
            config.data = apply_overrides(config.data, {"dataset": args.dataset})
    elif args.dataset is None and args.prepared:
        from tfrec.data.preparation import PrepareConfig  # noqa: PLC0415

        prepared = PrepareConfig.load(Path(args.prepared) / "prepare_config.json")
        config = cls.default_config(prepared.data.dataset)
        config.data = prepared.data
    elif args.dataset is None:
        raise ValueError("--dataset is required (or --config with a saved config.json)")
    else:
        config = cls.default_config(args.dataset)
    if config.kind != kind:  # one config class serves ranking and pipeline runs
        config = dataclasses.replace(config, kind=kind)
    return kind, config


def _scenarios_config(args: argparse.Namespace, kind: str, cls: Any, saved: Any) -> Any:
    """The multi-scenario config: --scenarios (or the saved one), --scenario-weights, --data-dir."""
    if kind != "multi_scenario":
        raise ValueError(f"--scenarios trains a multi_scenario model; got --model {kind}")
    if args.dataset is not None:
        raise ValueError("--dataset and --scenarios: give one (the scenarios are datasets)")
    given = {k: v for k, v in data_overrides(args).items() if k != "data_dir"}
    if given or args.prepared:
        raise ValueError(
            f"--scenarios: data options {sorted(given) or ['--prepared']} do not apply "
            "(each scenario uses its dataset's preset split); only --data-dir does"
        )
    if saved:
        config = cls.config_class.load(saved)
    elif args.scenarios:
        config = cls.default_config(args.scenarios)
    else:
        raise ValueError("--model multi_scenario needs --scenarios a,b,... (or --config)")
    if args.scenario_weights:
        config.weights = parse_weights(args.scenario_weights, "--scenario-weights")
    if args.scenario_selection:
        config.selection = args.scenario_selection
    if args.scenario_user_embeddings:
        config.user_embeddings = _parse_flags(
            args.scenario_user_embeddings, "--scenario-user-embeddings"
        )
    if args.scenario_mean_experts:
        config.mean_experts = _parse_flags(args.scenario_mean_experts, "--scenario-mean-experts")
    if args.scenario_max_histories:
        config.max_histories = _parse_lengths(args.scenario_max_histories)
    if args.data_dir:
        config.data_dir = args.data_dir
    config.__post_init__()  # checks the weights against the scenarios
    return config


def _parse_flags(text: str, option: str) -> list[bool]:
    """``"yes,no"`` -> ``[True, False]``; ``option`` names the flag in the error."""
    values = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
    flags = []
    for part in text.split(","):
        word = part.strip().lower()
        if word not in values:
            raise ValueError(f"{option}: {part.strip()!r}; expected yes or no per scenario")
        flags.append(values[word])
    return flags


def _parse_lengths(text: str) -> list[int]:
    """``"50,200"`` -> ``[50, 200]`` (``--scenario-max-histories``)."""
    lengths = []
    for part in text.split(","):
        word = part.strip()
        length = int(word) if word.isdecimal() and word.isascii() else 0
        if length < 1:
            raise ValueError(f"--scenario-max-histories: {word!r}; expected an integer >= 1")
        lengths.append(length)
    return lengths


def _model_overrides(args: argparse.Namespace, kind: str, config: Any) -> None:
    """Applies the model flags (``--epochs``, ``--set``, ...) to ``kind``'s config sections."""
    if kind not in MODEL_SECTIONS:
        raise ValueError(f"--model {kind}: model flags are not mapped for it; use --config")
    section, flags = MODEL_SECTIONS[kind]
    overrides = {
        field: getattr(args, flag)
        for flag, field in flags.items()
        if getattr(args, flag) is not None
    }
    overrides.update(parse_set_options(args.set))
    privacy = train_privacy.overrides(args)
    overrides.update(privacy)
    if args.seed is not None:
        overrides["training.seed"] = args.seed
    setattr(config, section, apply_overrides(getattr(config, section), overrides))
    if kind in RETRIEVAL_STAGE_FLAGS:
        stage, names = RETRIEVAL_STAGE_FLAGS[kind]
        stage_overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
        stage_overrides.update(privacy)
        setattr(config, stage, apply_overrides(getattr(config, stage), stage_overrides))


def _check_privacy(kind: str, config: Any) -> None:
    """Refuses DP-SGD settings for a kind whose training does not implement DP-SGD."""
    train_privacy.check(kind, getattr(config, MODEL_SECTIONS.get(kind, ("model",))[0], None))


def experiment_config(args: argparse.Namespace) -> tuple[str, Any]:
    """The experiment kind and its config, from the command line.

    Raises:
        ValueError: Missing ``--dataset``, a flag that does not apply to the kind,
            or a bad value (the message names the flag or config field).
    """
    kind, config = _base_config(args)
    if args.prepared and kind != "retrieval":
        raise ValueError(f"--prepared: retrieval runs only, got --model {kind}")
    if args.fusion_weights and not hasattr(config, "fusion_weights"):
        raise ValueError(f"--fusion-weights: pipeline runs only, got --model {kind}")
    if kind != "multi_scenario":  # its data options were applied by _scenarios_config
        config.data = apply_overrides(config.data, data_overrides(args))
    if args.prepared:
        config.prepared_dir = str(args.prepared)
    _model_overrides(args, kind, config)
    _check_privacy(kind, config)
    if args.fusion_weights:
        config.fusion_weights = parse_weights(args.fusion_weights)
    evaluation = {
        "sampled_negatives": args.sampled_negatives,
        "mask": args.eval_mask,
        "num_users": args.eval_users,
    }
    config.evaluation = apply_overrides(
        config.evaluation, {key: value for key, value in evaluation.items() if value is not None}
    )
    return kind, config


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec train``: fit, evaluate, save and export through the Experiment contract.

    With ``--workers N`` it launches N workers instead; with ``--worker-index``
    it is one of them (:mod:`tfrec.cli.train_workers`). Parameter-server training
    (``--strategy parameter_server``) is :mod:`tfrec.training.parameter_server_cli`.
    """
    kind, config = experiment_config(args)
    section = getattr(config, MODEL_SECTIONS.get(kind, ("model",))[0], None)
    strategy = getattr(getattr(section, "training", None), "strategy", "auto")
    if parameter_server_cli.wanted(args, kind, strategy):  # --strategy parameter_server
        return parameter_server_cli.run(
            args, lambda: _train(args, kind, config, Path(args.output_dir))
        )
    if args.workers is not None or args.worker_index is not None:
        train_workers.check(args, kind)
    if args.workers is not None:
        return train_workers.launch(args)
    if args.worker_index is not None:
        return train_workers.run_worker(args, lambda out: _train(args, kind, config, out))
    return _train(args, kind, config, Path(args.output_dir))


def _train(args: argparse.Namespace, kind: str, config: Any, output_dir: Path) -> int:
    """Fits, evaluates, saves and exports one run into ``output_dir``."""
    from tfrec.evaluation.intervals import ci_lines  # noqa: PLC0415
    from tfrec.training.experiment import experiment_class  # noqa: PLC0415

    experiment = experiment_class(kind)(config, output_dir=output_dir)
    experiment.fit(resume=args.resume)
    metrics = experiment.evaluate()
    experiment.save(output_dir)
    if not args.no_export:
        for path in experiment.export(output_dir / "export"):
            print(f"export: {path}")
    part = 1 if kind == "multi_scenario" else 0  # "<scenario>/test/..." keys

    def summary(key: str) -> bool:
        head = key.split("/")[part:]
        return bool(head) and head[0].startswith("test") and key.endswith(SUMMARY_SUFFIXES)

    shown = {
        key: round(value, 4)
        for key, value in metrics.items()
        if summary(key) or key == "valid/fusion_weight"
    }
    privacy = ("privacy/epsilon", "privacy/delta")
    shown.update({k: v for k, v in experiment.metrics.items() if k.endswith(privacy)})
    print(json.dumps(shown, indent=2))
    for line in ci_lines(metrics, [key for key in shown if key.endswith(("@10", "mrr"))]):
        print(line)  # only with --eval-users (a sample of the users)
    print(f"wrote {output_dir / 'config.json'} and {output_dir / 'metrics.json'}")
    return 0
