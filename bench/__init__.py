"""`make bench`: the bank measured at scale against the machine's own ceilings (bench/README.md)."""
