"""`python -m vlmsweep.data render|check|sroie ...`: vlmsweep.cli.data."""

if __name__ == "__main__":
    from vlmsweep.cli.data import main

    raise SystemExit(main())
