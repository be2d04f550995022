"""Data readers, splits and the class-balanced batch sampler.

Readers return uint8 image tensors and int64 label tensors and raise
:class:`pairloss.PairLossError` naming the file for bad or missing data:

- :func:`load_fashion_mnist` (IDX files, :func:`read_idx`),
- :func:`load_att_faces` (binary PGM files, :func:`read_pgm`),
- :func:`load_image_folder` (one subfolder per class; PNG/JPEG need Pillow), and
  :class:`ImageFiles` (images decoded when a batch needs them) with :func:`image_folder_files`,
- :func:`cub200_files`, :func:`cars196_files`, :func:`sop_files` (the published layouts of
  CUB-200-2011, Cars196 and Stanford Online Products, with their standard splits),
- :func:`load_embedding_file` (precomputed embeddings, ``.npy`` or ``.pt``),
- :func:`load_digits` (scikit-learn's bundled 8 x 8 digits).

:data:`pairloss.data.readers.READERS` lists every reader with a small valid example; the test
suite damages those examples in every way it knows and requires a clear error or no change.

Splits: :func:`class_split` (zero-shot, disjoint classes), :func:`identity_split` (face
protocol: held-out, enrolled and unknown identities; gallery and probe images) and
:func:`enrol` (gallery and probe images of given identities).
Sampler: :class:`PKSampler` (P classes x K samples per batch, seeded, distributed-aware).
Ranking and preference: :func:`read_svmlight` / :func:`load_lambdarank` (svmlight files with
query groups, as :class:`RankingData` and its slates) and :func:`preference_lists` /
:func:`preference_pairs` (from STS-B's human scores, :func:`load_sts_scores`).
"""

from ._files import DATA_ENV
from .benchmarks import BenchmarkFiles, cars196_files, cub200_files, sop_files
from .digits import load_digits
from .embeddings import load_embedding_file, read_labels
from .folders import MAX_IMAGE_PIXELS, decode_image, load_image_folder
from .idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    load_fashion_mnist,
    parse_idx,
    read_idx,
)
from .images import ImageFiles, image_folder_files
from .pgm import load_att_faces, parse_pgm, read_pgm
from .preference import (
    PreferenceLists,
    PreferencePairs,
    load_sts_scores,
    preference_lists,
    preference_pairs,
    read_sts_scores,
)
from .sampler import PKSampler
from .splits import ClassSplit, IdentitySplit, class_split, enrol, identity_split
from .svmlight import RankingData, load_lambdarank, read_svmlight

__all__ = [
    "BenchmarkFiles",
    "DATA_ENV",
    "ImageFiles",
    "MAX_IMAGE_PIXELS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "ClassSplit",
    "IdentitySplit",
    "PKSampler",
    "PreferenceLists",
    "PreferencePairs",
    "RankingData",
    "cars196_files",
    "class_split",
    "cub200_files",
    "decode_image",
    "enrol",
    "identity_split",
    "image_folder_files",
    "load_att_faces",
    "load_digits",
    "load_embedding_file",
    "load_fashion_mnist",
    "load_image_folder",
    "load_lambdarank",
    "load_sts_scores",
    "parse_idx",
    "parse_pgm",
    "preference_lists",
    "preference_pairs",
    "read_idx",
    "read_labels",
    "read_pgm",
    "read_sts_scores",
    "read_svmlight",
    "sop_files",
]
