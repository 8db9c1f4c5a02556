import sys

from xmodal_diar.cli import main

sys.exit(main())
