import sys

from harbinger_dev.demo.real import main

sys.exit(main())
