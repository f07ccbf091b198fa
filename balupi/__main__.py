import sys

from balupi.cli import main

sys.exit(main())
