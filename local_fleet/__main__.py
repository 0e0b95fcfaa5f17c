import sys

from local_fleet.launcher import main

sys.exit(main())
