import sys

from glimp_llm.cli import main

sys.exit(main())
