import sys

from harbinger_dev.demo.story import main

sys.exit(main())
