"""`python -m siq.codegen.cli ...` runs the `siq` command."""
import sys

from .main import main

sys.exit(main())
