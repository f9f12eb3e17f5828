"""ferpipe: per-face facial-expression timelines from audience videos, stored in DuckDB.

Expressions are what a face displays, not what a person feels.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

CAVEAT = "These curves show facial expressions a model reads from each face: what faces display, not what people feel."
