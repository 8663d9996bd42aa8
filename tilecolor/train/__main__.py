import sys

from tilecolor.train.cli import main

sys.exit(main())
