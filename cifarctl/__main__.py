"""`python -m cifarctl ...` is the same as the `cifarctl` console script."""

from cifarctl.cli import main

main()
