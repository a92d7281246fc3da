import sys

from raysight.cli import main

sys.exit(main())
