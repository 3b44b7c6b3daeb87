"""``python -m aoe``: the same as the ``aoe`` console script."""

from aoe.cli.main import run

if __name__ == "__main__":
    run()
