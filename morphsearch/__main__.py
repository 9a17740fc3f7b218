import sys

from morphsearch.cli import main

sys.exit(main())
