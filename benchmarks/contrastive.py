"""Speed and memory of CLIP, SigLIP and MNRL against open_clip and sentence-transformers (see
``pairloss.bench_contrastive``).

python benchmarks/contrastive.py --batch 4096 16384 --dim 384 512
"""

import sys

from pairloss.bench_contrastive import main

if __name__ == "__main__":
    sys.exit(main())
