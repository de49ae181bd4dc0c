import sys

from bench.gateway_cost import main

sys.exit(main())
