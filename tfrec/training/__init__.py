"""Training: the Experiment contract, one runner per kind, and their shared machinery.

:mod:`~tfrec.training.experiment` (contract, registry, run layout); runners
:mod:`~tfrec.training.retrieval`, :mod:`~tfrec.training.ranking`,
:mod:`~tfrec.training.pipeline`; shared: loop, callbacks, checkpoints,
optimizers, strategy.
"""
