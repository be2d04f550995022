"""Speed and memory of LambdaLoss and RankNet on long lists against allRank and
sentence-transformers (see ``pairloss.bench_ranking``).

python benchmarks/ranking.py --queries 256 --items 1024
"""

import sys

from pairloss.bench_ranking import main

if __name__ == "__main__":
    sys.exit(main())
