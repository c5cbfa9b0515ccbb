"""`python -m vlmsweep.memory`: the peak-memory estimate of a config (vlmsweep.cli.memory)."""

if __name__ == "__main__":
    from vlmsweep.cli.memory import main

    raise SystemExit(main())
