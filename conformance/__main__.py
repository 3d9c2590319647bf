"""`python -m conformance --base URL ...`"""

from conformance.cli import main

raise SystemExit(main())
