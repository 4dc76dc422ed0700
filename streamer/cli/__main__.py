"""`python -m streamer.cli`: the `sam2-stream` command."""

import sys

from streamer.cli import main

sys.exit(main())
