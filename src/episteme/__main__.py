"""`python -m episteme`: the same as the `episteme` command."""

from episteme.cli import main

main()
