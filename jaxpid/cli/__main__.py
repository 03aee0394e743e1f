"""``python -m jaxpid.cli`` runs the ``jaxpid`` command."""

import sys

from jaxpid.cli.app import main

sys.exit(main())
