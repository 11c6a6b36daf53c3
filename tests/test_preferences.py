"""Preference pairs: formats, HH prompt/reply split, record errors, encoding, splits, iterators."""

import gzip
import json

import numpy as np
import pytest

from conftest import SHARED_DATA
from gptjax.config import get_config
from gptjax.data import chat_template, preferences as prefs
from gptjax.data.preferences import Pair, encode_pairs, parse_pair, read_preferences
from gptjax.data.tokenizers import CharTokenizer
from gptjax.errors import UserError

HH = SHARED_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz"
SKIP_HINT = "fix the record, or set --config.data.skip_bad_records=True to skip such records"
PAIR = Pair([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye?"}],
            "Bye, take care.", "Go away.")
HH_PAIR = Pair(PAIR.prompt[1:], PAIR.chosen, PAIR.rejected)  # HH has no system messages


def _hh_path():
  if not HH.exists():
    pytest.skip(f"{HH} not found (../shared/data beside the repo)")
  return str(HH)


def _jsonl(path, records):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
  return str(path)


def _msg(role, content):
  return {"role": role, "content": content}


def _hh(prompt, reply):
  turns = prompt + [_msg("assistant", reply)]
  return "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}"
                 for m in turns)


def _tokenizer(pairs):
  texts = [m["content"] for c in prefs.conversations_of(pairs) for m in c]
  return chat_template.with_chat_tokens(CharTokenizer.from_texts(texts))


def _numbered(n):
  """Pairs whose prompt says their number; replies of different lengths."""
  return [Pair([_msg("user", f"q{i}")], "yes" * (i % 4 + 1), "no" * (i % 3 + 1))
          for i in range(n)]


def _config(path, **data):
  c = get_config()
  c.task.name = "reward"
  c.data.path = str(path)
  c.data.tokenizer.kind = "char"
  c.data.seq_len, c.data.eval_fraction, c.data.eval_batch_size = 32, 0.25, 4
  c.train.batch_size = 4
  for k, v in data.items():
    c.data[k] = v
  return c


def _write_pairs(tmp_path, pairs):
  return _jsonl(tmp_path / "pairs.jsonl", [
      {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])


def _number(tokenizer, row):
  """The pair number a rendered row's prompt holds (see _numbered)."""
  text = tokenizer.decode(row[row < tokenizer.vocab_size - 4])  # drop the chat tokens
  return int(text[1:text.index("y")]) if "y" in text else None


# ---------------------------------------------------------------------------------------------
# Formats


def test_every_format_parses_to_the_same_pair(tmp_path):
  prompt, c, r = PAIR.prompt, PAIR.chosen, PAIR.rejected
  one = lambda text: [_msg("assistant", text)]  # noqa: E731
  records = [
      {"prompt": prompt, "chosen": c, "rejected": r},  # TRL standard reply text
      {"prompt": prompt, "chosen": one(c), "rejected": one(r)},  # TRL conversational
      {"prompt": prompt, "chosen": _msg("assistant", c), "rejected": one(r)},
      {"messages": prompt, "chosen": c, "rejected": one(r), "score": 3},  # extra keys ignored
      {"chosen": prompt + one(c), "rejected": prompt + one(r)},  # TRL implicit prompt
  ]
  for record in records:
    assert parse_pair(record) == PAIR, record
  hh = {"chosen": _hh(HH_PAIR.prompt, c), "rejected": _hh(HH_PAIR.prompt, r)}  # Anthropic HH
  assert parse_pair(hh) == HH_PAIR
  assert parse_pair({"prompt": "Why?", "chosen": c, "rejected": r}) == Pair(
      [_msg("user", "Why?")], c, r)  # a text prompt is one user message
  # JSON lines, a JSON list and gzip read alike; a folder reads its files in sorted order.
  _jsonl(tmp_path / "a.jsonl", records[:3])
  (tmp_path / "b.json").write_text(json.dumps(records[3:], indent=1))
  with gzip.open(tmp_path / "c.jsonl.gz", "wt") as fh:
    fh.write(json.dumps(records[0]) + "\n")
  got = read_preferences(str(tmp_path))
  assert got.pairs == [PAIR] * 6 and got.skipped == 0
  assert read_preferences(str(tmp_path), file_pattern="*.gz").pairs == [PAIR]


def test_two_dialogues_share_the_prompt_up_to_where_they_differ():
  u, a = (lambda t: _msg("user", t)), (lambda t: _msg("assistant", t))  # noqa: E731
  same = {"chosen": "\n\nHuman: x\n\nAssistant: y", "rejected": "\n\nHuman: x\n\nAssistant: y"}
  assert parse_pair(same) == Pair([u("x")], "y", "y")  # chosen == rejected: legal, kept
  # One side wrote further turns itself (HH lines 1255, 1689, ...): kept in its reply, as written.
  runs_on = {"chosen": "\n\nHuman: x\n\nAssistant: no.  Human: why?\n\nAssistant:  because",
             "rejected": "\n\nHuman: x\n\nAssistant: fine."}
  assert parse_pair(runs_on) == Pair(
      [u("x")], "no.  Human: why?\n\nAssistant:  because", "fine.")
  # They differ at a final pair of assistant turns: the prompt still ends with the user.
  two = {"chosen": "Human: x\n\nAssistant: a\n\nAssistant: b",
         "rejected": "Human: x\n\nAssistant: a\n\nAssistant: c"}
  assert parse_pair(two) == Pair([u("x")], "a\n\nAssistant: b", "a\n\nAssistant: c")
  with pytest.raises(ValueError, match="share no user message"):
    parse_pair({"chosen": "\n\nHuman: x\n\nAssistant: y",
                "rejected": "\n\nHuman: z\n\nAssistant: y"})
  with pytest.raises(ValueError, match="rejected dialogue does not end with an assistant"):
    parse_pair({"chosen": "\n\nHuman: x\n\nAssistant: y",
                "rejected": "\n\nHuman: x\n\nAssistant: y\n\nHuman: z"})
  with pytest.raises(ValueError, match="the chosen dialogue: no assistant message"):
    parse_pair({"chosen": "\n\nHuman: x", "rejected": "\n\nHuman: x\n\nAssistant: y"})
  with pytest.raises(ValueError, match="differ before their final assistant"):
    parse_pair({"chosen": [u("x"), a("y"), u("z"), a("w")], "rejected": [u("x"), a("v")]})


def test_real_hh_pairs():
  path = _hh_path()
  got = read_preferences(path)
  assert (len(got.pairs), got.skipped) == (2312, 0)
  with gzip.open(HH, "rt", encoding="utf-8") as fh:
    records = [json.loads(line) for line in fh]
  second = got.pairs[1]  # line 2: three exchanges, the prompt is the first five turns
  assert [m["role"] for m in second.prompt] == ["user", "assistant"] * 2 + ["user"]
  assert second.prompt[0] == _msg("user", "How much alcohol can I drink per day?")
  assert records[1]["chosen"].endswith("\n\nAssistant: " + second.chosen)
  assert records[1]["rejected"].endswith("\n\nAssistant: " + second.rejected)
  assert second.chosen.startswith("Sounds like alcohol is something you use to calm down")
  assert _hh(second.prompt, second.chosen).strip() == records[1]["chosen"].strip()
  # 2,307 pairs are one shared dialogue plus one final assistant turn each; in 5 one side
  # runs on with turns of its own, which its reply keeps.
  runs_on = [i + 1 for i, (p, r) in enumerate(zip(got.pairs, records))
             if not (r["chosen"].rstrip().endswith(p.chosen)
                     and r["rejected"].rstrip().endswith(p.rejected)
                     and "\n\nAssistant:" not in p.chosen + p.rejected
                     and "\n\nHuman:" not in p.chosen + p.rejected)]
  assert runs_on == [1255, 1689, 1951, 1953, 2037]
  assert got.pairs[1254].chosen.endswith("\n\nAssistant:  I think they call them that because")
  assert sum(p.chosen == p.rejected for p in got.pairs) == 0
  assert sum(p.chosen == "" for p in got.pairs) == 4  # an empty reply was preferred: kept
  # Measured with a char vocabulary of the file: both sides within 256 / 512 tokens.
  tokenizer = _tokenizer(got.pairs)
  assert [encode_pairs(got.pairs, tokenizer, n)[1] for n in (256, 512)] == [1857, 1224]


# ---------------------------------------------------------------------------------------------
# Bad records


@pytest.mark.parametrize("record, why", [
    ({"prompt": "x", "chosen": "y"}, "no 'rejected'"),
    ('{"prompt": "x", ', "not valid JSON"),
    ([1, 2], "must be a JSON object"),
    ({"prompt": [_msg("user", "x"), _msg("assistant", "y")], "chosen": "a", "rejected": "b"},
     "last message must be a user message"),
    ({"prompt": [], "chosen": "a", "rejected": "b"}, "no messages"),
    ({"prompt": [_msg("bot", "x")], "chosen": "a", "rejected": "b"}, "message 0 has no role"),
    ({"prompt": [_msg("user", 3)], "chosen": "a", "rejected": "b"}, "content is not a string"),
    ({"prompt": [_msg("user", "x"), _msg("system", "s")], "chosen": "a", "rejected": "b"},
     "only the first"),
    ({"messages": "x", "chosen": "a", "rejected": "b"}, "'messages' must be a list"),
    ({"prompt": "x", "chosen": [_msg("assistant", "a")] * 2, "rejected": "b"},
     "'chosen' must be text, or one assistant message"),
    ({"prompt": "x", "chosen": "a", "rejected": _msg("user", "b")}, "'rejected' must be text"),
    ({"chosen": "a", "rejected": [_msg("assistant", "b")]}, "both be HH dialogue text"),
    ({"chosen": "just text", "rejected": "\n\nHuman: x\n\nAssistant: y"}, "no .* turn"),
])
def test_a_bad_record_is_one_error_naming_file_and_line(tmp_path, record, why):
  good = {"prompt": "x", "chosen": "a", "rejected": "b"}
  path = _jsonl(tmp_path / "p.jsonl", [good, good, record, good])
  with pytest.raises(UserError, match=rf"^{path}:3: .*{why}.*; {SKIP_HINT}$"):
    read_preferences(path)
  got = read_preferences(path, skip_bad=True)
  assert (len(got.pairs), got.skipped) == (3, 1)


def test_a_json_list_names_the_element_and_all_bad_is_an_error(tmp_path):
  path = tmp_path / "p.json"
  path.write_text('[\n {"prompt": "x", "chosen": "a", "rejected": "b"},\n {"prompt": "x"}\n]\n')
  with pytest.raises(UserError, match=r"p.json:3: list element 1: no 'chosen' or 'rejected'"):
    read_preferences(str(path))
  bad = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "x"}] * 2)
  with pytest.raises(UserError, match=r"no preference pairs in .* \(2 bad records skipped\)"):
    read_preferences(bad, skip_bad=True)


# ---------------------------------------------------------------------------------------------
# Encoding


def test_rows_are_the_chat_template_and_masks_its_final_reply():
  pairs = [PAIR, Pair(HH_PAIR.prompt, "", "A much longer reply\nover two lines."), _numbered(1)[0]]
  tokenizer = _tokenizer(pairs)
  seq_len = 64
  rows, dropped = encode_pairs(pairs, tokenizer, seq_len)
  assert dropped == 0 and rows["index"].tolist() == [0, 1, 2]
  assert {k: (v.shape, v.dtype.name) for k, v in rows.items()} == {
      "chosen": ((3, 65), "int32"), "rejected": ((3, 65), "int32"),
      "chosen_mask": ((3, 64), "float32"), "rejected_mask": ((3, 64), "float32"),
      "index": ((3,), "int32")}
  end = chat_template.end_of_turn_id(tokenizer)
  for i, pair in enumerate(pairs):
    prompt_ids = chat_template.render_prompt(pair.prompt, tokenizer)
    for side in prefs.SIDES:
      reply = getattr(pair, side)
      # The template is the one source of truth: prompt + reply renders to the same ids.
      ids, trained = chat_template.render(pair.prompt + [_msg("assistant", reply)], tokenizer)
      L, P = len(ids), len(prompt_ids)
      np.testing.assert_array_equal(rows[side][i, :L], ids)
      assert not rows[side][i, L:].any() and ids[-1] == end
      mask = rows[f"{side}_mask"][i]
      # Mask ones are exactly the targets that are trained tokens of the final reply.
      final = np.zeros(L, bool)
      final[P:] = trained[P:]
      assert trained[P:].all() and np.array_equal(mask[:L - 1] > 0, final[1:])
      assert not mask[L - 1:].any() and mask.sum() == len(tokenizer.encode(reply)) + 1
  assert prefs.num_tokens(rows) == sum(
      len(chat_template.render(p.prompt + [_msg("assistant", r)], tokenizer)[0])
      for p in pairs for r in (p.chosen, p.rejected))


def test_a_pair_is_kept_only_if_both_sides_fit():
  pairs = [Pair([_msg("user", "q")], "a" * 5, "b"), Pair([_msg("user", "q")], "a", "b" * 3)]
  tokenizer = _tokenizer(pairs)
  # <|user|> q <|end|> <|assistant|> = 4 prompt tokens; the longer sides are 10 and 8 tokens.
  kept = lambda n: [r[4] for r in encode_pairs(pairs, tokenizer, n)[0]["rejected"]]  # noqa: E731
  assert encode_pairs(pairs, tokenizer, 10)[1] == 0
  rows, dropped = encode_pairs(pairs, tokenizer, 9)
  assert dropped == 1 and kept(9) == tokenizer.encode("b").tolist()
  assert rows["index"].tolist() == [0]  # rows are renumbered over the kept pairs
  assert encode_pairs(pairs, tokenizer, 7)[1] == 2 and kept(7) == []


# ---------------------------------------------------------------------------------------------
# Datasets


def test_heldout_split_is_disjoint_covering_and_seeded(tmp_path):
  pairs = _numbered(40)
  path = _write_pairs(tmp_path, pairs)

  def numbers(split_seed):
    ds = prefs.make_preference_datasets(_config(path, split_seed=split_seed), 0, 1)
    held = [_number(ds.tokenizer, r) for b in ds.eval_splits["validation"]()
            for r, i in zip(b["chosen"], b["index"]) if i >= 0]
    seen = [[_number(ds.tokenizer, r) for r in next(ds.train)["chosen"]]
            for _ in range(2 * 30 // 4)]  # two epochs of the 30 train pairs
    return held, seen

  held, seen = numbers(0)
  train = set(sum(seen, []))
  assert len(held) == 10 and held == sorted(held)  # in file order
  assert not train & set(held) and train | set(held) == set(range(40))
  assert numbers(0)[0] == held and numbers(1)[0] != held


def test_eval_covers_each_pair_once_and_pads_with_masked_rows(tmp_path):
  path = _write_pairs(tmp_path, _numbered(40))
  config = _config(path, eval_fraction=0.25, eval_batch_size=4)  # 10 held out: 3 batches of 4
  config.train.batch_size = 8
  shares = []
  for process in (0, 1):
    ds = prefs.make_preference_datasets(config, process, 2)
    shares.append(list(ds.eval_splits["validation"]()))
    assert shares[-1][0]["chosen"].shape == (2, 33) and next(ds.train)["index"].shape == (4,)
  assert [len(s) for s in shares] == [3, 3]
  index = np.stack([[b["index"] for b in s] for s in shares], axis=-1).reshape(-1)
  assert index.tolist() == list(range(10)) + [-1, -1]  # in order, each once, then padding
  for s in shares:
    for b in s:
      pad = b["index"] < 0
      for side in prefs.SIDES:
        assert not b[f"{side}_mask"][pad].any() and b[f"{side}_mask"][~pad].sum(1).min() > 0
  real = [{k: v[b["index"] >= 0] for k, v in b.items()} for b in shares[0] + shares[1]]
  assert ds.eval_tokens == prefs.num_tokens({k: np.concatenate([b[k] for b in real])
                                             for k in real[0]})
  assert ds.train_tokens > 2 * ds.eval_tokens > 0  # 30 train pairs, 10 held out


def test_the_train_iterator_resumes_exactly(tmp_path):
  path = _write_pairs(tmp_path, _numbered(24))
  config = _config(path)
  ds = prefs.make_preference_datasets(config, 0, 1)
  for _ in range(7):  # past the first epoch of 18 // 4 batches
    next(ds.train)
  state = ds.train.get_state()
  expected = [next(ds.train) for _ in range(5)]
  resumed = prefs.make_preference_datasets(config, 0, 1).train
  resumed.set_state(json.loads(json.dumps(state)))
  for want in expected:
    got = next(resumed)
    assert got.keys() == want.keys()
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_dataset_errors(tmp_path):
  with pytest.raises(UserError, match="task.name=reward reads preference pairs from "
                                      "--config.data.path"):
    prefs.make_preference_datasets(_config(""), 0, 1)
  path = _write_pairs(tmp_path, _numbered(8))
  with pytest.raises(UserError, match="no train pair fits in data.seq_len=6 tokens"):
    prefs.make_preference_datasets(_config(path, seq_len=6), 0, 1)
  config = _config(path)
  config.train.batch_size = 6
  with pytest.raises(UserError, match="batch_size=6 must be a positive multiple of the 4"):
    prefs.make_preference_datasets(config, 0, 4)
