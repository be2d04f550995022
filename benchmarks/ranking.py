"""Speed and memory of LambdaLoss and RankNet on long lists against allRank and
sentence-transformers (see ``pairloss.ranking_bench``).

python benchmarks/ranking.py --queries 256 --items 1024
"""

import sys

from pairloss.ranking_bench import main

if __name__ == "__main__":
    sys.exit(main())
