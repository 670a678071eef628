"""`python -m afn_agent.sim marlin|grbl --link PATH ...`"""

import argparse
import sys

from .run import add_arguments, main

parser = argparse.ArgumentParser(prog="afn-agent sim", description="Run a simulated firmware on a pty.")
add_arguments(parser)
sys.exit(main(parser.parse_args()))
