"""``python -m build_engines build CONFIG [--dry-run]`` / ``python -m build_engines validate DIR [DIR2]``."""

import sys

from build_engines.build import main

sys.exit(main())
