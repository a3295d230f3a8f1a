"""The deterministic held-out split shared by counting, training and benchmarking.

Row i (0-based record index in its file, bad rows included) is held out when
i % HELDOUT_EVERY == HELDOUT_EVERY - 1: every fifth row, 20%, spread over the whole file.
Ranking (and draft training) use the other rows; held-out coverage and benchmark prompts
use these.
"""

HELDOUT_EVERY = 5


def is_heldout(row_index: int) -> bool:
    return row_index % HELDOUT_EVERY == HELDOUT_EVERY - 1
