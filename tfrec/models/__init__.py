"""TFRS models: the two-tower retrieval model and the LSTM ranker."""
