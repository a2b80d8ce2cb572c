import sys

from sightline.training.cli import train_main

sys.exit(train_main())
