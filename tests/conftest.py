"""Suite-wide setup.

One OpenBLAS thread for the whole suite and every subprocess and notebook kernel it
starts (they inherit the environment): the calibration tests run thousands of small
L-BFGS-B fits, and OpenBLAS's thread pool makes each 40-70x slower on this 2-core
machine when other work is running (2.9 ms per fit with one thread vs 107-217 ms).
It only works if set before numpy is first imported, hence here, at collection's start.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if "numpy" in sys.modules:  # a plugin imported numpy first: the setting came too late
    sys.stderr.write("tests/conftest.py: numpy was imported before OPENBLAS_NUM_THREADS\n")
