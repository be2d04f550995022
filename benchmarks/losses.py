"""Speed and memory of pairloss losses against pytorch-metric-learning (see ``pairloss.bench``).

python benchmarks/losses.py --batch 4096 --dim 512
"""

import sys

from pairloss.bench import main

if __name__ == "__main__":
    sys.exit(main())
