import os

# As tokenmill/__init__.py does, but before a test module imports torch itself: OpenMP threads
# must sleep, not spin, while they wait, or tests sharing two cores with a server
# subprocess slow to a crawl.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
