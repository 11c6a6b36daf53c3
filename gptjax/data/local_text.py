"""TFDS builder that stores a cleaned corpus as array_record train/validation splits.

Records are ordered chunks of text (at most CHUNK_CHARS, cut after newlines) with a flag for
the chunk that starts a document, so readers can re-join documents with a separator. The
config name fingerprints the raw corpus and every setting that changes the stored text, so
changed files or settings never reuse stale data.
"""

import contextlib
import dataclasses
import io
from typing import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from gptjax.data import cleaning
from gptjax.data.sources import Corpus, prepared_key
from gptjax.errors import UserError

CHUNK_CHARS = 256 * 1024  # per record: cheap to read, and many to tokenize in parallel


@dataclasses.dataclass
class LocalTextConfig(tfds.core.BuilderConfig):
  """Named by the fingerprint of corpus + settings; carries no fields of its own."""


class LocalText(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")
  # Nothing (checksums, metadata) lives beside this module. Saying so also spares TFDS from
  # resolving the package's path, which needs importlib_resources (not a dependency here).
  code_path = None

  def __init__(self, *, documents: Callable[[], Iterator[str]], eval_fraction: float, setting: str,
               augment: Callable[[str], str] | None = None, **kwargs):
    self._documents = documents  # cleaned documents; called once per pass
    self._eval_fraction = eval_fraction
    self._setting = setting
    self._augment = augment  # if set: the training split is followed by augment(its text)
    super().__init__(**kwargs)

  def _info(self):
    features = tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "doc_start": tfds.features.Scalar(dtype=np.bool_)}
    )
    return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # local files: nothing to download
    num_chars = sum(len(doc) for doc in self._documents())
    if not num_chars:
      raise UserError(f"{self._setting}: no text (every document is empty or whitespace)")
    num_train = cleaning.split_point(num_chars, self._eval_fraction)
    if not num_train:
      raise UserError("--config.data.eval_fraction leaves no training text; lower it")
    splits = {"train": self._generate_examples("train", num_train)}
    if num_train < num_chars:  # TFDS cannot store an empty split
      splits["validation"] = self._generate_examples("validation", num_train)
    return splits

  def _generate_examples(self, split: str, num_train: int):
    key = 0
    passes = [None] + ([self._augment] if self._augment and split == "train" else [])
    for augment in passes:  # a second pass writes the augmented copy of every training piece
      for piece, doc_start in cleaning.split_pieces(self._documents(), num_train, split):
        if augment is not None:
          piece, doc_start = augment(piece), True  # a copy never runs on from an original
        for i, chunk in enumerate(cleaning.chunk_text(piece, CHUNK_CHARS)):
          yield key, {"text": chunk, "doc_start": doc_start and i == 0}
          key += 1


@contextlib.contextmanager
def _quiet():
  """TFDS warns about custom configs and prints banners; neither helps a user here."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  tfds.disable_progress_bar()
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    logging.set_verbosity(verbosity)


def prepared_builder(corpus: Corpus, data, data_dir: str) -> LocalText:
  """The corpus stored as array_record under `data_dir`, built now if not there yet."""
  def documents():
    return cleaning.clean_documents(
        corpus.documents(), form=data.normalize, dedup=data.dedup, max_chars=data.max_chars
    )

  augment = None
  if data.get("counterfactual_swaps"):  # counterfactual data augmentation (gptjax.data.counterfactual)
    from gptjax.data.counterfactual import read_swaps
    augment = read_swaps(data.counterfactual_swaps)

  def make():
    return LocalText(documents=documents, eval_fraction=data.eval_fraction, setting=corpus.setting,
                     augment=augment,
                     config=LocalTextConfig(name=prepared_key(corpus, data)), data_dir=data_dir,
                     file_format="array_record")

  with _quiet():
    builder = make()
    if builder.is_prepared():
      return builder
    try:  # TFDS writes a temporary folder and renames it into place when complete
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False)
      )
    except OSError:
      builder = make()
      if not builder.is_prepared():  # not just another process finishing first
        raise
  return builder


def read_split(builder: LocalText, split: str) -> list[tuple[str, bool]]:
  """(text, starts_document) records of a split, in order; [] for an absent split."""
  if split not in builder.info.splits:
    return []
  source = builder.as_data_source(split=split)
  records = (source[i] for i in range(len(source)))
  return [(r["text"].decode("utf-8"), bool(r["doc_start"])) for r in records]
