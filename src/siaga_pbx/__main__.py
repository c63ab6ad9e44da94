"""``python -m siaga_pbx`` is the ``siaga-pbx`` command."""

import sys

from .cli import main

sys.exit(main())
