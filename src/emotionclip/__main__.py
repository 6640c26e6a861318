import sys

from emotionclip.cli import main

sys.exit(main())
