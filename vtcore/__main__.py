import sys

from vtcore.cli import main

sys.exit(main())
