"""Conversation readers: alpaca, HH-RLHF and messages files, record errors, held-out split."""

import gzip
import json

import pytest

from conftest import SHARED_DATA
from gptjax.data.conversations import (
    FORMATS,
    detect_format,
    parse_hh_dialogue,
    read_conversations,
    split_heldout,
)
from gptjax.errors import UserError

ALPACA = SHARED_DATA / "alpaca" / "alpaca_5000.json"
HH = SHARED_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz"
SKIP_HINT = "fix the record, or set --config.data.skip_bad_records=True to skip such records"


def _need(path):
  if not path.exists():
    pytest.skip(f"{path} not found (../shared/data beside the repo)")
  return str(path)


def _jsonl(path, records):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
  return str(path)


def _chat(*turns):
  return {"messages": [{"role": r, "content": c} for r, c in turns]}


# ---------------------------------------------------------------------------------------------
# Real files


def test_real_alpaca():
  path = _need(ALPACA)
  first = json.loads(ALPACA.read_text())[0]
  got = read_conversations(path)
  assert (len(got.conversations), got.skipped, got.format) == (5000, 0, "alpaca")
  assert got.conversations[0] == [
      {"role": "user", "content": first["instruction"] + "\n\n" + first["input"]},
      {"role": "assistant", "content": first["output"]},
  ]
  assert got.conversations[4] == [  # an empty input adds nothing to the instruction
      {"role": "user", "content": "Generate a new solution to address the global climate crisis."},
      got.conversations[4][1],
  ]
  # List element 2335 (index 2335) has an empty output: an empty reply, still a turn to learn (to stop).
  assert got.conversations[2335][1] == {"role": "assistant", "content": ""}


def test_real_hh():
  path = _need(HH)
  got = read_conversations(path)
  # Lines 517, 926 and 1104 chose an empty reply and have no other assistant content: kept.
  assert (len(got.conversations), got.skipped, got.format) == (2312, 0, "hh")
  assert got.conversations[516][-1] == {"role": "assistant", "content": ""}
  second = got.conversations[1]  # line 2
  assert [m["role"] for m in second] == ["user", "assistant"] * 3
  assert second[0]["content"] == "How much alcohol can I drink per day?"
  assert second[-1]["content"].startswith("Sounds like alcohol is something you use to calm down")
  assert second[-1]["content"].endswith("in the moment, to calm down.")
  assert second[1]["content"].startswith("Alcohol is a depressant")  # no leading space
  # Line 87: the empty final reply was chosen; it stays, as an empty assistant turn.
  assert got.conversations[86][-1] == {"role": "assistant", "content": ""}
  # Two assistant turns in a row (8 dialogues, line 668 the first) stay two messages.
  doubled = [i for i, c in enumerate(got.conversations)
             if any(a["role"] == b["role"] for a, b in zip(c, c[1:]))]
  assert len(doubled) == 8 and doubled[0] == 668 - 1
  # Every `rejected` dialogue parses too (the preference side reuses the parser).
  with gzip.open(HH, "rt", encoding="utf-8") as fh:
    for line in fh:
      assert parse_hh_dialogue(json.loads(line)["rejected"])


# ---------------------------------------------------------------------------------------------
# HH dialogues


def test_parse_hh_dialogue():
  text = "\n\nHuman: Hi\nthere \n\nAssistant:  Hello.\n\n1. a\n2. b  \n\nHuman: ok Human: x"
  assert parse_hh_dialogue(text) == [
      {"role": "user", "content": "Hi\nthere"},
      {"role": "assistant", "content": "Hello.\n\n1. a\n2. b"},
      {"role": "user", "content": "ok Human: x"},  # no blank line before: not a turn
  ]
  assert parse_hh_dialogue("Human: a\n\nAssistant: b") == [
      {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}
  ]
  assert parse_hh_dialogue("\n\nHuman: a\n\nAssistant:")[-1] == {"role": "assistant", "content": ""}
  with pytest.raises(ValueError, match="text before the first turn"):
    parse_hh_dialogue("preamble\n\nHuman: a\n\nAssistant: b")
  with pytest.raises(ValueError, match="no .*turn"):
    parse_hh_dialogue("just text")


# ---------------------------------------------------------------------------------------------
# Formats and detection


def test_messages_with_system_first(tmp_path):
  convs = [
      _chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello")),
      _chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")),
  ]
  convs[1]["messages"][0]["name"] = "extra keys are dropped"
  path = _jsonl(tmp_path / "chat.jsonl", convs)
  for fmt in ("auto", "messages"):
    got = read_conversations(path, format=fmt)
    assert got.format == "messages" and got.skipped == 0
    assert got.conversations[0][0] == {"role": "system", "content": "Be brief."}
    assert got.conversations[1] == [
        {"role": r, "content": c} for r, c in zip(["user", "assistant"] * 2, "abcd")
    ]


def test_detection_and_explicit_format(tmp_path):
  alpaca = {"instruction": "Say hi", "input": "", "output": "hi"}
  hh = {"chosen": "\n\nHuman: Say hi\n\nAssistant: hi", "rejected": "\n\nHuman: x"}
  want = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]
  (tmp_path / "list.json").write_text(json.dumps([alpaca, alpaca]))
  _jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "Say hi", "output": "hi"}])  # input optional
  with gzip.open(tmp_path / "hh.jsonl.gz", "wt", encoding="utf-8") as fh:
    fh.write(json.dumps(hh) + "\n")
  _jsonl(tmp_path / "chat.jsonl", [_chat(("user", "Say hi"), ("assistant", "hi"))])
  for name, fmt in [("list.json", "alpaca"), ("alpaca.jsonl", "alpaca"),
                    ("hh.jsonl.gz", "hh"), ("chat.jsonl", "messages")]:
    path = str(tmp_path / name)
    for given in ("auto", fmt):
      got = read_conversations(path, format=given)
      assert got.format == fmt and got.conversations[0] == want, (name, given)
  assert detect_format(alpaca) == "alpaca" and detect_format(hh) == "hh"
  assert detect_format(_chat()) == "messages"
  with pytest.raises(ValueError, match="cannot tell the format"):
    detect_format({"text": "x"})
  with pytest.raises(UserError, match=r"chat\.jsonl:1: hh record needs a string 'chosen'"):
    read_conversations(str(tmp_path / "chat.jsonl"), format="hh")
  with pytest.raises(UserError, match="unknown: use auto, parallel or one of alpaca, hh, messages"):
    read_conversations(str(tmp_path / "chat.jsonl"), format="sharegpt")
  assert FORMATS == ("alpaca", "hh", "messages")


def test_folder_glob_and_mixed_formats(tmp_path):
  for name, answer in [("b.jsonl", "2"), ("a.jsonl", "1")]:
    _jsonl(tmp_path / name, [_chat(("user", "q"), ("assistant", answer))])
  got = read_conversations(str(tmp_path))
  assert [c[-1]["content"] for c in got.conversations] == ["1", "2"]  # sorted file order
  assert len(read_conversations(str(tmp_path / "b*")).conversations) == 1
  _jsonl(tmp_path / "c.jsonl", [{"instruction": "q", "output": "3"}])
  with pytest.raises(UserError, match=r"c\.jsonl is alpaca but .*a\.jsonl is messages"):
    read_conversations(str(tmp_path))
  with pytest.raises(UserError, match="does not exist"):
    read_conversations(str(tmp_path / "missing.jsonl"))


# ---------------------------------------------------------------------------------------------
# Malformed records


GOOD = _chat(("user", "q"), ("assistant", "a"))
BAD = {
    "only a user turn": (_chat(("user", "q")), "no assistant message"),
    "only a system turn": (_chat(("system", "s")), "no assistant message"),
    "bad role": (_chat(("user", "q"), ("bot", "a")), "message 1 has no role out of system"),
    "system not first": (
        _chat(("user", "q"), ("system", "s"), ("assistant", "a")), "message 1 is a system message"
    ),
    "content not a string": (
        {"messages": [{"role": "user", "content": 3}, GOOD["messages"][1]]}, "not a string"
    ),
    "messages not a list": ({"messages": "hi"}, "needs a list 'messages'"),
    "not an object": ([1, 2], "needs a list 'messages'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_record_names_file_and_line(tmp_path, case):
  record, why = BAD[case]
  path = _jsonl(tmp_path / "chat.jsonl", [GOOD, "", record, GOOD])  # line 2 blank
  with pytest.raises(UserError, match=rf"chat\.jsonl:3: .*{why}.*; {SKIP_HINT}$") as e:
    read_conversations(path)
  assert "\n" not in str(e.value)
  got = read_conversations(path, skip_bad=True)
  assert (len(got.conversations), got.skipped) == (2, 1)


def test_invalid_json_line(tmp_path):
  path = _jsonl(tmp_path / "chat.jsonl", [GOOD, GOOD, '{"messages": [', GOOD, "not json"])
  with pytest.raises(UserError, match=rf"chat\.jsonl:3: not valid JSON .*; {SKIP_HINT}$"):
    read_conversations(path)
  got = read_conversations(path, skip_bad=True)
  assert (len(got.conversations), got.skipped) == (3, 2)


def test_alpaca_list_element_line(tmp_path):
  good = {"instruction": "q", "input": "", "output": "a"}
  elements = [json.dumps(good), json.dumps(good, indent=2), json.dumps({"instruction": "q"}), "{}"]
  path = tmp_path / "alpaca.json"
  path.write_text("[\n" + ",\n".join(elements) + "\n]\n")  # element 1 on lines 3-7
  with pytest.raises(UserError, match=rf"alpaca\.json:8: list element 2: alpaca record needs "
                                      rf"a string 'output'; {SKIP_HINT}$"):
    read_conversations(str(path))
  got = read_conversations(str(path), skip_bad=True)
  assert (len(got.conversations), got.skipped, got.format) == (2, 2, "alpaca")


def test_broken_files_fail_even_with_skip_bad(tmp_path):
  cases = {
      "text.json": ("hello\n", "is not JSON"),
      "list.json": ('[{"instruction": "q", "output": "a"},\n{"output":\n', ":3: not valid JSON"),
      "comma.json": ('[{"instruction": "q", "output": "a"}\n {"x": 1}]', ":2: expected ','"),
      "empty.json": ("[]", "no conversations in"),
      "unknown.jsonl": ('{"text": "x"}\n', ":1: cannot tell the format"),
  }
  for name, (text, why) in cases.items():
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=why):
      read_conversations(str(tmp_path / name), skip_bad=True)
  path = _jsonl(tmp_path / "all_bad.jsonl", [_chat(("user", "q"))] * 2)
  with pytest.raises(UserError, match=r"no conversations in .*all_bad\.jsonl \(2 bad records"):
    read_conversations(path, skip_bad=True)
  (tmp_path / "bytes.jsonl").write_bytes(b'{"messages": "\xff"}\n')
  with pytest.raises(UserError, match="not UTF-8"):
    read_conversations(str(tmp_path / "bytes.jsonl"))


# ---------------------------------------------------------------------------------------------
# Held-out split


def test_split_heldout():
  convs = [[{"role": "assistant", "content": str(i)}] for i in range(100)]
  train, held = split_heldout(convs, 0.1, seed=0)
  assert (len(train), len(held)) == (90, 10)
  assert (train, held) == split_heldout(convs, 0.1, seed=0)
  assert held != split_heldout(convs, 0.1, seed=1)[1]
  ids = lambda part: [int(c[0]["content"]) for c in part]  # noqa: E731
  assert ids(train) == sorted(ids(train)) and ids(held) == sorted(ids(held))  # order kept
  assert sorted(ids(train) + ids(held)) == list(range(100))  # disjoint, union is all
  assert [len(p) for p in split_heldout(convs[:3], 0.0, seed=0)] == [2, 1]  # at least one held
  with pytest.raises(UserError, match="leaves none to train on"):
    split_heldout(convs[:1], 0.1, seed=0)
  with pytest.raises(UserError, match="eval_fraction"):
    split_heldout(convs[:4], 0.9, seed=0)
