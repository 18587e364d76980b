"""``python -m unirec`` is the ``unirec`` command."""

from unirec.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="unirec")
