import sys

from loadtest.faults.matrix import main

sys.exit(main())
