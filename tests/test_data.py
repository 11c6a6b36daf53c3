"""Data package: tokenizers, cleaning, stored splits, packing, shuffling, resume, eval, errors."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from gptjax.config import base_config, stdlib_dir
from gptjax.data import (
    CharTokenizer,
    SentencePieceTokenizer,
    load_tokenizer,
    make_lm_datasets,
    prepare_data,
    tokenizer_from_json,
)
from gptjax.data import cleaning, local_text, pipeline, sources, tokenizers
from gptjax.errors import UserError

STDLIB = stdlib_dir()
CODE_SAMPLE = (
    "class Foo(Base):\n"
    '    """Docstring with ünïcödé, 日本語 and an emoji 🐍."""\n'
    "\n"
    "    def bar(self, x):\n"
    "\tif x:  # a tab-indented line, trailing spaces   \n"
    "            return {'a': [1, 2,   3]}\n"
    "\n\n\n"
    "        pass\r\n"
    "  \n"
)


def _config(tmp_path, path, kind="char", **data):
  c = base_config()
  c.data.path = str(path)
  c.data.data_dir = str(tmp_path / "data")
  c.data.tokenizer.kind = kind
  c.data.tokenizer.vocab_size = 600
  c.data.seq_len = 16
  c.train.batch_size = 8
  c.data.eval_batch_size = 8
  c.data.update(data)
  return c


def _code_folder(tmp_path, names=("textwrap.py", "bisect.py", "colorsys.py", "shlex.py")):
  folder = tmp_path / "code"
  folder.mkdir()
  for name in names:
    (folder / name).write_text(open(os.path.join(STDLIB, name), encoding="utf-8").read())
  return folder


# ----------------------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def code_text():
  return "".join(open(os.path.join(STDLIB, n), encoding="utf-8").read()
                 for n in ("textwrap.py", "shlex.py", "bisect.py"))


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def sp_tokenizer(request, code_text):
  return tokenizers.train_sentencepiece(
      [code_text], vocab_size=500, model_type=request.param, byte_fallback=True,
      max_sentences=100_000)


def test_char_tokenizer_is_nanogpts(shakespeare_path):
  text = open(shakespeare_path).read()
  chars = sorted(set(text))
  tok = CharTokenizer.from_texts([text])
  assert tok.vocab_size == len(chars) == 65 and tok.eos_id is None
  stoi = {c: i for i, c in enumerate(chars)}
  np.testing.assert_array_equal(tok.encode(text[:5000]), [stoi[c] for c in text[:5000]])
  assert tok.decode(tok.encode(text)) == text
  with pytest.raises(UserError, match="not in the char"):
    tok.encode("~é")


def test_sentencepiece_round_trips_code_and_prose(sp_tokenizer, shakespeare_path):
  unseen = open(os.path.join(STDLIB, "dataclasses.py"), encoding="utf-8").read()
  prose = open(shakespeare_path).read()[:50_000]
  for text in (CODE_SAMPLE, unseen, prose, "", "\n", "    x"):
    ids = sp_tokenizer.encode(text)
    assert ids.dtype == np.int32
    assert sp_tokenizer.decode(ids) == text
  newline = sp_tokenizer.encode("\n")
  assert len(newline) == 1 and newline[0] != sp_tokenizer.eos_id
  # Indentation is compressed, not spelled out one space per token.
  assert len(sp_tokenizer.encode(" " * 8)) <= 2


def test_sentencepiece_without_byte_fallback_keeps_newlines(code_text):
  tok = tokenizers.train_sentencepiece(
      [code_text], vocab_size=500, model_type="bpe", byte_fallback=False, max_sentences=100_000)
  sample = "def f(x):\n    return x\n\n\n        y = 1  \n"
  for text in (code_text, sample):
    assert tok.decode(tok.encode(text)) == text


def test_sentencepiece_vocab_and_batch_encode(sp_tokenizer, code_text):
  assert sp_tokenizer.vocab_size == 500 and sp_tokenizer.eos_id == 2
  lines = code_text.split("\n")[:50]
  for a, b in zip(sp_tokenizer.encode_batch(lines), lines):
    np.testing.assert_array_equal(a, sp_tokenizer.encode(b))


def test_sentencepiece_bad_vocab_size_is_user_error():
  with pytest.raises(UserError, match="vocab_size"):
    tokenizers.train_sentencepiece(["tiny corpus\n"] * 3, vocab_size=5000, model_type="bpe",
                                   byte_fallback=True, max_sentences=10)


def test_tokenizer_json_round_trip(sp_tokenizer, tmp_path):
  for tok in (CharTokenizer("abc\n "), sp_tokenizer):
    d = json.loads(json.dumps(tok.to_json()))
    back = tokenizer_from_json(d)
    assert type(back) is type(tok) and back.to_json() == tok.to_json()
    assert (back.vocab_size, back.eos_id) == (tok.vocab_size, tok.eos_id)
    np.testing.assert_array_equal(back.encode("cab a\n"), tok.encode("cab a\n"))
    path = tmp_path / f"{d['kind']}.json"
    path.write_text(json.dumps(d))
    assert load_tokenizer(str(path)).to_json() == tok.to_json()
  model = tmp_path / "sp.model"  # a plain sentencepiece model file loads too
  model.write_bytes(sp_tokenizer.model_proto)
  assert isinstance(load_tokenizer(str(model)), SentencePieceTokenizer)
  with pytest.raises(UserError, match="--config.data.tokenizer.path"):
    load_tokenizer(str(tmp_path / "missing.json"))


# ----------------------------------------------------------------------------- cleaning


def test_normalize():
  composed, decomposed = "caf\u00e9", "cafe\u0301"
  assert cleaning.normalize(decomposed, "NFC") == composed
  assert cleaning.normalize(composed, "NFD") == decomposed
  assert cleaning.normalize("\ufb01", "NFKC") == "fi"
  assert cleaning.normalize(decomposed, "") == decomposed


def test_clean_documents_drops_empty_and_duplicates():
  docs = ["a\n", "  \n\t", "", "cafe\u0301", "a\n", "caf\u00e9", "b"]
  clean = lambda **kw: list(cleaning.clean_documents(docs, **kw))  # noqa: E731
  assert clean(form="NFC", dedup=True, max_chars=0) == ["a\n", "caf\u00e9", "b"]
  assert clean(form="", dedup=True, max_chars=0) == ["a\n", "cafe\u0301", "caf\u00e9", "b"]
  assert clean(form="NFC", dedup=False, max_chars=0) == ["a\n", "caf\u00e9"] * 2 + ["b"]
  assert clean(form="NFC", dedup=True, max_chars=4) == ["a\n", "ca"]


def test_split_pieces_and_chunks():
  docs = ["abcd", "efgh", "ij"]
  train = list(cleaning.split_pieces(docs, 6, "train"))
  val = list(cleaning.split_pieces(docs, 6, "validation"))
  assert train == [("abcd", True), ("ef", True)]
  assert val == [("gh", True), ("ij", True)]
  text = "line one\nline two\n" * 50 + "x" * 300
  chunks = cleaning.chunk_text(text, 100)
  assert "".join(chunks) == text and all(len(c) <= 100 for c in chunks)
  assert all(c.endswith("\n") for c in chunks[:-4])  # cut after newlines where possible
  assert cleaning.split_point(1_115_394, 0.1) == int(1_115_394 * 0.9)


# ----------------------------------------------------------------------------- stored splits


def test_shakespeare_splits_are_nanogpts(tmp_path, shakespeare_path):
  text = open(shakespeare_path).read()
  n = len(text)
  assert n == 1_115_394
  prepared = prepare_data(_config(tmp_path, shakespeare_path))
  tok = prepared.tokenizer
  assert tok.vocab_size == 65
  stoi = {c: i for i, c in enumerate(sorted(set(text)))}
  train, val = prepared.tokens["train"], prepared.tokens["validation"]
  assert len(train) == int(n * 0.9) and len(val) == n - int(n * 0.9)
  np.testing.assert_array_equal(train, [stoi[c] for c in text[:int(n * 0.9)]])
  assert tok.decode(val) == text[int(n * 0.9):]


def test_rerun_reuses_cache(tmp_path, shakespeare_path, monkeypatch):
  config = _config(tmp_path, shakespeare_path)
  first = prepare_data(config)

  def fail(*args, **kwargs):
    raise AssertionError("cache not reused")

  monkeypatch.setattr(local_text, "prepared_builder", fail)
  monkeypatch.setattr(CharTokenizer, "from_texts", fail)
  again = prepare_data(config)
  assert again.tokenizer.to_json() == first.tokenizer.to_json()
  np.testing.assert_array_equal(again.tokens["validation"], first.tokens["validation"])
  config.data.eval_fraction = 0.2  # a setting that changes the data is not served stale
  with pytest.raises(AssertionError, match="cache not reused"):
    prepare_data(config)


def test_changed_file_rebuilds(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("hello world\n" * 100)
  config = _config(tmp_path, corpus)
  before = prepare_data(config)
  mtime = corpus.stat().st_mtime_ns
  corpus.write_text("goodbye moon\n" * 100)  # same size: only the modification time tells
  os.utime(corpus, ns=(mtime, mtime + 10**9))  # as on filesystems with 1 s timestamps
  after = prepare_data(config)
  assert after.tokenizer.decode(after.tokens["train"]).startswith("goodbye moon\n")
  assert before.folder != after.folder


def _documents(stream, eos_id):
  """Token arrays between separators."""
  return [part[part != eos_id] for part in np.split(stream, np.flatnonzero(stream == eos_id))]


def test_sentencepiece_documents_joined_by_eos(tmp_path, monkeypatch):
  folder = _code_folder(tmp_path)
  (folder / "dup.py").write_text((folder / "bisect.py").read_text())  # removed by dedup
  (folder / "blank.py").write_text("\n  \n")  # removed as empty
  config = _config(tmp_path, folder, kind="sentencepiece", file_pattern="*.py", eval_fraction=0.25)
  prepared = prepare_data(config)
  tok = prepared.tokenizer
  docs = [(folder / n).read_text() for n in sorted(os.listdir(folder))
          if n not in ("dup.py", "blank.py")]
  boundary = int(sum(map(len, docs)) * 0.75)
  for split in ("train", "validation"):
    expected = [piece for piece, _ in cleaning.split_pieces(docs, boundary, split)]
    got = [tok.decode(ids) for ids in _documents(prepared.tokens[split], tok.eos_id)]
    assert got == expected
  # Storing documents as many small chunks gives the very same token stream.
  monkeypatch.setattr(local_text, "CHUNK_CHARS", 500)
  config.data.data_dir = str(tmp_path / "chunked")
  config.data.tokenizer.path = str(tmp_path / "tok.json")
  (tmp_path / "tok.json").write_text(json.dumps(tok.to_json()))
  monkeypatch.setattr(tokenizers, "train_sentencepiece", None)  # the given file, never training
  chunked = prepare_data(config)
  corpus = sources.corpus_from_config(config.data, config.data.data_dir)
  builder = local_text.prepared_builder(corpus, config.data, config.data.data_dir)
  assert len(local_text.read_split(builder, "train")) > 20  # really stored in many chunks
  for split in ("train", "validation"):
    np.testing.assert_array_equal(chunked.tokens[split], prepared.tokens[split])


# ----------------------------------------------------------------------------- train pipeline

STREAM = np.arange(1, 4 * 30 + 2, dtype=np.uint16)  # token value = position + 1; 30 windows of 4


def _train(tokens=STREAM, *, batch_size=6, seed=0, random_offset=False, index=0, count=1):
  return pipeline.train_iterator(
      tokens, seq_len=4, batch_size=batch_size // count, seed=seed, random_offset=random_offset,
      process_index=index, process_count=count, worker_count=0)


def test_packing_covers_every_target_once_per_epoch():
  it = _train()
  rows = np.concatenate([next(it)["tokens"] for _ in range(5)])  # one epoch: 30 windows
  assert rows.shape == (30, 5) and rows.dtype == np.int32
  assert (np.diff(rows, axis=1) == 1).all()  # seq_len + 1 consecutive tokens
  assert ((rows[:, 0] - 1) % 4 == 0).all()  # windows start on the seq_len grid
  np.testing.assert_array_equal(np.sort(rows[:, 1:], axis=None), STREAM[1:])  # targets once


def test_shuffle_is_seeded_and_reshuffles_each_epoch():
  def starts(seed):
    it = _train(seed=seed)
    return np.concatenate([next(it)["tokens"][:, 0] for _ in range(10)])  # two epochs

  a, c = starts(0), starts(1)
  np.testing.assert_array_equal(a, starts(0))
  assert not np.array_equal(a, c)
  assert not np.array_equal(a[:30], np.sort(a[:30]))  # shuffled at all
  np.testing.assert_array_equal(np.sort(a[:30]), np.sort(a[30:]))  # epoch 2: same windows,
  assert not np.array_equal(a[:30], a[30:])  # in a new order,
  assert not np.array_equal(c[:30], a[30:])  # not seed 1's first epoch


def test_random_offset_shifts_the_grid_each_epoch():
  windows = pipeline.num_windows(len(STREAM), 4, random_offset=True)
  it = _train(batch_size=1, random_offset=True, seed=3)
  rows = np.concatenate([next(it)["tokens"] for _ in range(4 * windows)])
  assert (np.diff(rows, axis=1) == 1).all() and rows.max() <= STREAM[-1]
  offsets = []
  for epoch in np.split(rows, 4):
    offset = set((epoch[:, 0] - 1) % 4)
    assert len(offset) == 1  # one grid per epoch
    assert len(set(epoch[:, 1:].ravel())) == windows * 4  # no target twice in an epoch
    offsets.append(offset.pop())
  assert len(set(offsets)) > 1


def test_resume_is_exact():
  it = _train(random_offset=True)
  for _ in range(7):  # into the second epoch
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it)["tokens"] for _ in range(8)]
  resumed = _train(random_offset=True)
  resumed.set_state(state)
  for batch in expected:
    np.testing.assert_array_equal(next(resumed)["tokens"], batch)


@pytest.mark.parametrize("count", [2, 3])
def test_process_slices_partition_each_global_batch(count):
  whole = _train()
  parts = [_train(index=i, count=count) for i in range(count)]
  for _ in range(12):
    batch = next(whole)["tokens"]
    local = [next(p)["tokens"] for p in parts]
    assert all(x.shape == (6 // count, 5) for x in local)
    assert sorted(map(tuple, np.concatenate(local))) == sorted(map(tuple, batch))


@pytest.mark.parametrize("count", [1, 2])
def test_eval_covers_each_target_once(count):
  stream = np.arange(1, 104, dtype=np.uint16)  # 102 targets: 13 windows of 8, 4 batches of 4
  per_process = [list(pipeline.eval_iterator(stream, seq_len=8, batch_size=4, process_index=i,
                                             process_count=count)) for i in range(count)]
  assert {len(batches) for batches in per_process} == {4}  # same step count everywhere
  targets = []
  for batch in (b for batches in per_process for b in batches):
    tokens, mask = batch["tokens"], batch["mask"]
    assert tokens.shape == (4 // count, 9) and tokens.dtype == np.int32
    assert mask.shape == (4 // count, 8) and mask.dtype == np.float32
    real = mask == 1
    np.testing.assert_array_equal(tokens[:, :-1][real] + 1, tokens[:, 1:][real])
    targets += tokens[:, 1:][real].tolist()
  assert sorted(targets) == list(range(2, 104))
  last = np.concatenate([batches[-1]["mask"] for batches in per_process])
  assert last.sum() == 102 - 12 * 8 and set(np.unique(last)) == {0.0, 1.0}


# ----------------------------------------------------------------------------- public entry point


def test_make_lm_datasets_contract(tmp_path, shakespeare_path):
  text = open(shakespeare_path).read()
  config = _config(tmp_path, shakespeare_path, seq_len=64, eval_batch_size=16)
  config.train.batch_size = 12
  ds = make_lm_datasets(config, process_index=1, process_count=2)
  assert (ds.train_tokens, ds.eval_tokens) == (1_003_854, 111_540)
  batch = next(ds.train)
  assert set(batch) == {"tokens"} and batch["tokens"].shape == (6, 65)
  assert batch["tokens"].dtype == np.int32
  assert all(ds.tokenizer.decode(row) in text[:1_003_854] for row in batch["tokens"])
  state = json.loads(json.dumps(ds.train.get_state()))
  expected = [next(ds.train)["tokens"] for _ in range(3)]
  again = make_lm_datasets(config, process_index=1, process_count=2)
  again.train.set_state(state)
  for tokens in expected:
    np.testing.assert_array_equal(next(again.train)["tokens"], tokens)
  first, second = list(ds.eval_splits["validation"]()), list(ds.eval_splits["validation"]())
  windows = math.ceil((111_540 - 1) / 64)
  assert len(first) == len(second) == math.ceil(windows / 16)
  for a, b in zip(first, second):  # each call is a fresh pass
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
  assert first[0]["tokens"].shape == (8, 65) and first[0]["mask"].shape == (8, 64)
  assert next(make_lm_datasets(config).train)["tokens"].shape == (12, 65)  # jax: 1 process


def test_corpus_errors_name_the_setting(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "a.txt").write_text(" \n\t\n")
  (empty / "b.txt").write_text("")
  binary = tmp_path / "binary.txt"
  binary.write_bytes(b"\xff\xfe\x00bad")
  cases = {
      tmp_path / "missing.txt": "does not exist",
      empty: "no text",
      empty / "*.md": "no files match",
      binary: "not UTF-8",
  }
  for path, why in cases.items():
    with pytest.raises(UserError, match=why) as e:
      make_lm_datasets(_config(tmp_path, path), 0, 1)
    assert "--config.data.path" in str(e.value) and "\n" not in str(e.value)
  config = _config(tmp_path, "", tfds_name="no_such_corpus_gptjax")
  with pytest.raises(UserError, match="--config.data.tfds_name=no_such_corpus_gptjax") as e:
    make_lm_datasets(config, 0, 1)
  assert "--config.data.path" in str(e.value) and "\n" not in str(e.value)
  config.data.tfds_name = ""
  with pytest.raises(UserError, match="--config.data.path"):
    make_lm_datasets(config, 0, 1)


def test_prepare_cli(tmp_path, shakespeare_path):
  cfg = tmp_path / "cfg.py"
  cfg.write_text("from gptjax.config import base_config\n\n\ndef get_config(arg=None):\n"
                 "  c = base_config()\n  c.data.tokenizer.kind = 'char'\n  return c\n")

  def run(path):
    return subprocess.run(
        [sys.executable, "-m", "gptjax.data.prepare", f"--config={cfg}",
         f"--config.data.data_dir={tmp_path / 'data'}", f"--config.data.path={path}"],
        capture_output=True, text=True, timeout=120, check=False)

  ok = run(shakespeare_path)
  assert ok.returncode == 0, ok.stderr
  assert "train: 1,003,854 tokens" in ok.stdout and "validation: 111,540 tokens" in ok.stdout
  bad = run(tmp_path / "nope.txt")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: --config.data.path=")
