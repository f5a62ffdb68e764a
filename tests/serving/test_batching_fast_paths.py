"""merge_inputs' concatenate path (equal inner shapes) gives what the padding path gives."""

from __future__ import annotations

import numpy as np

from tfrec.serving.batching import merge_inputs


def test_equal_shapes_concatenate() -> None:
    parts = [
        {"h": np.array([[b"", b"a"]], dtype=object), "k": np.int32([10])},
        {"h": np.array([[b"b", b"c"], [b"", b"d"]], dtype=object), "k": np.int32([5, 7])},
    ]
    merged = merge_inputs(parts, total_rows=3)
    # Rows in request order, nothing padded: 1 + 2 rows = total_rows.
    assert merged["h"].tolist() == [[b"", b"a"], [b"b", b"c"], [b"", b"d"]]
    assert merged["k"].tolist() == [10, 5, 7] and merged["k"].dtype == np.int32
    assert merged["h"].dtype == object


def test_extra_rows_still_repeat_the_first_row() -> None:
    # total_rows 4 > 3 rows (allowed_batch_sizes padding): the padding path runs.
    parts = [{"k": np.int32([1])}, {"k": np.int32([2, 3])}]
    assert merge_inputs(parts, total_rows=4)["k"].tolist() == [1, 2, 3, 1]


def test_mixed_widths_are_padded() -> None:
    parts = [
        {"h": np.array([[b"a"]], dtype=object)},
        {"h": np.array([[b"b", b"c"]], dtype=object)},
    ]
    assert merge_inputs(parts, total_rows=2)["h"].tolist() == [[b"a", b""], [b"b", b"c"]]
