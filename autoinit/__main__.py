"""``python -m autoinit``: the same command line as the ``autoinit`` entry point."""

from autoinit.cli import main

if __name__ == "__main__":
    main(prog_name="autoinit")
