import sys
from pathlib import Path

# The test modules here import the apps they serve as `failing_app` (pytest runs with
# --import-mode=importlib, which puts no test directory on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent))
