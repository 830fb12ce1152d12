"""``python -m playhouse_pool.benchmark``: the same as ``python -m
playhouse_pool``."""
import sys

from .cli import main

sys.exit(main())
