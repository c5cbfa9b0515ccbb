"""`python -m vlmsweep.report DIR [--out OUTDIR] [--metrics m1,m2]`: vlmsweep.cli.report."""

if __name__ == "__main__":
    from vlmsweep.cli.report import main

    raise SystemExit(main())
