"""``python -m axonml.launch``: the same as the ``axonml-launch`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
