import os

# As the `tokenmill` command does (see tokenmill/cli/main.py): torch's OpenMP threads
# must sleep, not spin, while they wait, or tests sharing two cores with a server
# subprocess slow to a crawl.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
