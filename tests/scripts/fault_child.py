"""Runs the ``buildings`` command line with a fault hook for tests/training/test_faults.py: every atomic
write of the package announces itself (one ``<path>`` line appended to $BUILDINGS_TEST_WRITES)
after its temporary is written and before it is flushed and renamed, then pauses
$BUILDINGS_TEST_PAUSE seconds, so that the test can kill the process exactly there. Nothing in the
package is changed: the hook wraps ``buildings.files.fsync_path`` in this process only."""

import os
import sys
import time

import buildings.files as files
from buildings.cli import main

_fsync_path = files.fsync_path


def announcing_fsync(path):
    if files.TEMP_MARK in os.path.basename(str(path)):
        with open(os.environ["BUILDINGS_TEST_WRITES"], "a") as log:
            log.write(f"{path}\n")
        time.sleep(float(os.environ.get("BUILDINGS_TEST_PAUSE", "0.2")))
    _fsync_path(path)


files.fsync_path = announcing_fsync
sys.exit(main(sys.argv[1:], prog_name="buildings"))
