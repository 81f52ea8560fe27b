"""Option choices that the command line needs before anything heavy is imported (no torch here).

``bench --help`` and option errors must answer in well under a second, so the names that click shows
live here; :mod:`bench.accel` re-exports them beside the code that gives them meaning.
"""

PRECISIONS = ("fp32", "tf32", "bf16")
PRECISION_CHOICES = ("auto", *PRECISIONS)
