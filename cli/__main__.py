"""``python -m cli``: the same as the ``starling`` script."""

from cli import main

main()
