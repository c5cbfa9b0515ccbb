"""`python -m vlmsweep.report DIR [--out OUTDIR] [--metrics m1,m2]`."""

from vlmsweep.report import main

raise SystemExit(main())
