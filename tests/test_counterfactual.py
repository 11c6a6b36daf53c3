"""Counterfactual data augmentation: the WinoBias swap list as a two-sided bijection."""

import pytest

from gptjax.data.counterfactual import parse_swaps, read_swaps
from gptjax.errors import UserError

SWAPS = "../shared/data/winobias/generalized_swaps.txt"


def test_swapping_twice_is_the_identity_on_the_two_sided_pairs():
  swaps = read_swaps(SWAPS)
  two_sided = [w for w in swaps.mapping if w not in swaps.one_way]
  assert len(two_sided) >= 90
  for word in two_sided:
    assert swaps.mapping[swaps.mapping[word]] == word
    for form in (word, word.capitalize(), word.upper()):
      assert swaps(swaps(form)) == form
  text = " ".join(two_sided)
  assert swaps(swaps(text)) == text and swaps(text) != text


def test_the_list_reuses_her_so_his_is_one_way_and_named():
  swaps = read_swaps(SWAPS)
  assert swaps("him") == "her" and swaps("her") == "him" and swaps("his") == "her"
  assert "his" in swaps.one_way


def test_swaps_respect_word_boundaries_and_case():
  swaps = parse_swaps(["he she", "man woman", "mr. mrs.", "ma'am sir"])
  assert swaps("He said he's the man; SHE agreed.") == "She said she's the woman; HE agreed."
  assert swaps("Hero, sheriff, manly, human, shell") == "Hero, sheriff, manly, human, shell"
  assert swaps("Mr. Li and ma'am") == "Mrs. Li and sir"
  assert swaps("a man-made thing") == "a woman-made thing"


@pytest.mark.parametrize("line, message", [("he", "two words"), ("he he", "itself")])
def test_a_bad_line_is_named(line, message):
  with pytest.raises(UserError, match=message):
    parse_swaps([line], "swaps.txt")


def test_the_data_option_appends_a_swapped_copy_of_the_training_split_only(tmp_path):
  from test_data import _config
  from gptjax.data import prepare_data
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("".join(f"{n} he saw her and his king.\n" for n in range(40)))
  (tmp_path / "swaps.txt").write_text("he she\nking queen\nhim her\nhis her\n")
  plain = prepare_data(_config(tmp_path, corpus, eval_fraction=0.25))
  config = _config(tmp_path, corpus, eval_fraction=0.25)
  config.data.counterfactual_swaps = str(tmp_path / "swaps.txt")
  augmented = prepare_data(config)
  assert augmented.folder != plain.folder  # a data setting: its own prepared data
  decode = augmented.tokenizer.decode
  train = decode(augmented.tokens["train"])
  original = plain.tokenizer.decode(plain.tokens["train"])
  assert train.startswith(original) and len(train) > 2 * len(original) - 10
  copy = train[len(original):]
  assert "she saw him and her queen." in copy and " he " not in copy
  assert decode(augmented.tokens["validation"]) == plain.tokenizer.decode(
      plain.tokens["validation"])  # held-out text untouched
  config.data.counterfactual_swaps = str(tmp_path / "missing.txt")
  with pytest.raises(UserError, match="counterfactual_swaps=.*no such file"):
    prepare_data(config)
