"""``python -m scalegmn.bench``: the same as ``scalegmn bench``."""
import sys

from .cli import main

sys.exit(main())
