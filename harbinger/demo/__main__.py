import sys

from harbinger.demo.story import main

sys.exit(main())
