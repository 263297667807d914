"""`python -m stacks_data <command> ...`: the same as `stacks-data <command> ...`."""

from stacks_data.cli import main

main()
