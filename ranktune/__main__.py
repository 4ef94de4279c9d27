"""``python -m ranktune``: the ``ranktune`` command line."""

from ranktune.service.cli import main

if __name__ == "__main__":
    main()
