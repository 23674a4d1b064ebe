"""``python -m stepstream``: the same as the ``stepstream`` command."""

from stepstream.cli import main

main()
