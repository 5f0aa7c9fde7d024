"""`python -m devstack` (what `make run` calls): the local stack's supervisor."""

import sys

from devstack.supervisor import main

sys.exit(main())
