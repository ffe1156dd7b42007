"""`python -m hewn` is the `hewn` command."""
from hewn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
