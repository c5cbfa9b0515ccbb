"""`python -m vlmsweep`: the run command (vlmsweep.cli.main)."""

if __name__ == "__main__":
    from vlmsweep.cli.main import cli

    cli()
