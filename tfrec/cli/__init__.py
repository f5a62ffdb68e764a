"""Command-line interface: ``tfrec train|evaluate|export|recommend|prepare|serve|demo``."""
