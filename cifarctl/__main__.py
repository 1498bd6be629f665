"""`python -m cifarctl ...` is the same as the `cifarctl` console script."""

from cifarctl.cli import main

if __name__ == "__main__":  # spawned worker processes re-import this module as __mp_main__
    main()
