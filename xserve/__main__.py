import sys

from xserve.cli import main

sys.exit(main())
