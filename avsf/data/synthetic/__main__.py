"""``python -m avsf.data.synthetic REQUEST RESULT``: one clip worker of :func:`generate_dataset`
(a fresh interpreter, see :func:`avsf.data.synthetic.dataset.worker_main`)."""

import sys

from avsf.data.synthetic.dataset import worker_main

worker_main(*sys.argv[1:3])
