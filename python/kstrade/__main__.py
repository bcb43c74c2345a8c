"""`python -m kstrade ...`: see `kstrade.cli`."""

from kstrade.cli import main

raise SystemExit(main())
