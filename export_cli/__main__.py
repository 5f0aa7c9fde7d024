import sys

from export_cli.cli import main

sys.exit(main())
