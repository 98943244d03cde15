import sys

from provenance.cli import main

sys.exit(main())
