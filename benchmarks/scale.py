"""Distributed, GradCache and memory at scale against open_clip and sentence-transformers (see
``pairloss.scale.bench``); the same as ``pairloss bench --family scale``.

python benchmarks/scale.py --parts gradcache ddp
"""

import sys

from pairloss.scale.bench import main

if __name__ == "__main__":
    sys.exit(main())
