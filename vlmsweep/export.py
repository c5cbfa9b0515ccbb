"""`python -m vlmsweep.export`: a merged model folder or a vLLM LoRA adapter (vlmsweep.cli.export)."""

if __name__ == "__main__":
    from vlmsweep.cli.quiet import quiet_third_party

    quiet_third_party()
    from vlmsweep.cli.export import main

    raise SystemExit(main())
