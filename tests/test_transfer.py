"""experiments.transfer: the transferred arm starts from the source model, on one vocabulary."""

import json
import pathlib
import subprocess
import sysconfig

import pytest

from conftest import REPO
from experiments import transfer
from gptjax.data.tokenizers import load_tokenizer
from gptjax.evaluate import evaluate_workdir
from gptjax.load import load_workdir


def _concatenated(files, path):
  path.write_text("\n".join(f.read_text(encoding="utf-8") for f in files), encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """Source: twenty files of Python's library; target: the next twenty. Tiny runs."""
  tmp = tmp_path_factory.mktemp("transfer")
  files = sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
  source = _concatenated(files[:20], tmp / "source.txt")
  target = _concatenated(files[20:40], tmp / "target.txt")
  argv = [f"--config={REPO / 'configs' / 'tiny.py'}", f"--source={source}", f"--target={target}",
          "--source_steps=10", "--steps=4", "--name=t", f"--root={tmp / 'runs'}",
          f"--out={tmp / 'out'}", "--", f"--config.data.data_dir={tmp / 'data'}"]
  transfer.main(argv)
  report = json.loads((tmp / "out" / "transfer_t.json").read_text())
  return tmp, argv, target, report


def test_the_transferred_arm_starts_at_the_source_models_loss_on_the_target(study):
  tmp, _, target, report = study
  arms = {r["arm"]: r for r in report["runs"]}
  source = str(tmp / "runs" / "t" / "source")
  zero_shot = evaluate_workdir(source, data_path=target, max_batches=4)["eval/loss"]
  assert arms["transfer"]["start_eval_loss"] == pytest.approx(zero_shot, rel=1e-5)
  assert arms["transfer"]["start_eval_loss"] < arms["scratch"]["start_eval_loss"]
  # One vocabulary: every character of both corpora, and both arms' models use it.
  chars = load_tokenizer(str(tmp / "runs" / "t" / "chars.json"))
  text = pathlib.Path(target).read_text() + (tmp / "source.txt").read_text()
  assert chars.vocab_size == len(set(text))
  for arm in arms.values():
    assert load_workdir(arm["workdir"]).tokenizer.to_json() == chars.to_json()
  assert {r["steps"] for r in report["runs"]} == {4}


def test_the_report_rows_are_the_runs_and_a_rerun_trains_nothing(study, monkeypatch):
  tmp, argv, _, report = study
  arms = {r["arm"]: r for r in report["runs"]}
  table = (tmp / "out" / "transfer_t.md").read_text()
  gain = arms["scratch"]["final_eval_loss"] - arms["transfer"]["final_eval_loss"]
  assert (f"| 4 | {arms['scratch']['start_eval_loss']:.4f} | "
          f"{arms['transfer']['start_eval_loss']:.4f} | {arms['scratch']['final_eval_loss']:.4f} "
          f"| {arms['transfer']['final_eval_loss']:.4f} | {gain:.4f} |") in table
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"trained again: {a}"))
  transfer.main(argv)
  assert json.loads((tmp / "out" / "transfer_t.json").read_text())["runs"] == report["runs"]
