"""``python -m avsf.data.synthetic TASK REQUEST RESULT``: one worker of
:func:`avsf.data.synthetic.workers.run_shared` (a fresh interpreter)."""

import sys

from avsf.data.synthetic.workers import worker_main

worker_main(*sys.argv[1:4])
