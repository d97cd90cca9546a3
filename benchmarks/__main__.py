"""`python -m benchmarks ...` is the same as the `tiltbench` console script."""

from benchmarks.cli import main

raise SystemExit(main())
