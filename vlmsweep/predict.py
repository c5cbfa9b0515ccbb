"""`python -m vlmsweep.predict`: new images into JSON lines with a trained folder (vlmsweep.cli.predict)."""

if __name__ == "__main__":
    from vlmsweep.cli.quiet import quiet_third_party

    quiet_third_party()
    from vlmsweep.cli.predict import main

    raise SystemExit(main())
