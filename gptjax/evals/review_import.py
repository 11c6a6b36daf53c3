"""Read the raters' filled review packs and report what they say, with its uncertainty.

    gptjax-review --key=pack/key.json --ratings=alice.csv,bob.csv [--out=pack/summary]

One CSV per rater (pack.csv filled in, or the form's download); the file's name is the
rater. Through key.json each rating goes back to its model. Reported:
  - per model and criterion, the mean rating with a 95% bootstrap interval (items resampled,
    every rater's ratings of an item kept together);
  - pairwise packs: each model's win rate (ties count half), with the same interval;
  - inter-rater agreement as Krippendorff's alpha (the `krippendorff` package): ordinal for
    the 1-5 ratings (units: an item's output), nominal for preferences (units: an item).
Writes OUT.json and OUT.md (a table for a paper).
"""

from __future__ import annotations

import csv
import json
import os

import krippendorff
import numpy as np

from gptjax.errors import UserError
from gptjax.evals.review_pack import CRITERIA, SIDES, rating_columns
from gptjax.evals.stats import bootstrap

LIKERT = ("1", "2", "3", "4", "5")
CHOICES = ("A", "B", "tie")


def read_key(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise UserError(f"--key={path}: no such file (the pack's key.json)") from None


def read_ratings(path: str, key: dict) -> dict[str, dict[str, str]]:
  """item id -> {rating column: value}; blank cells are left out (a skipped rating)."""
  columns = rating_columns(key["kind"], len(key["models"]))
  allowed = CHOICES if key["kind"] == "pairwise" else LIKERT
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = list(csv.DictReader(f))
  except FileNotFoundError:
    raise UserError(f"{path}: no such ratings file") from None
  if rows and not {"item", *columns} <= set(rows[0]):
    raise UserError(f"{path}: needs the columns item, {', '.join(columns)} (the pack's own CSV)")
  out = {}
  for line, row in enumerate(rows, 2):
    item = row["item"]
    if item not in key["items"]:
      raise UserError(f"{path}:{line}: item {item!r} is not in this pack's key")
    values = {c: row[c].strip() for c in columns if (row[c] or "").strip()}
    for column, value in values.items():
      if value not in allowed:
        raise UserError(f"{path}:{line}: {column}={value!r}; use one of {', '.join(allowed)}")
    out[item] = values
  return out


def summarize(key: dict, ratings: dict[str, dict], n_bootstrap: int = 2000, seed: int = 0):
  """`ratings`: rater -> read_ratings(...). The figures of the module docstring."""
  if not ratings:
    raise UserError("no ratings files given")
  raters, items = sorted(ratings), sorted(key["items"])
  out = {"kind": key["kind"], "models": key["models"], "raters": raters, "items": len(items)}
  model_of = lambda item, side: key["items"][item][side]
  if key["kind"] == "likert":
    sides = SIDES[:len(key["models"])]
    for criterion in CRITERIA:
      for model in key["models"]:
        per_item = [[float(ratings[r][i][f"{criterion}_{s}"]) for r in raters for s in sides
                     if model_of(i, s) == model and f"{criterion}_{s}" in ratings[r].get(i, {})]
                    for i in items]
        per_item = [v for v in per_item if v]
        if not per_item:
          raise UserError(f"no {criterion} ratings for {model}")
        out.setdefault(criterion, {})[model] = {
            "mean": float(np.mean([v for vs in per_item for v in vs])),
            "ci95": bootstrap(per_item, np.mean, n_bootstrap, seed),
            "ratings": sum(map(len, per_item))}
      units = [(i, s) for i in items for s in sides]
      data = [[float(ratings[r].get(i, {}).get(f"{criterion}_{s}", "nan")) for i, s in units]
              for r in raters]
      out[criterion]["alpha_ordinal"] = _alpha(data, "ordinal")
  else:
    first, second = key["models"]
    per_item = []  # 1 = first model preferred, 0 = second, 0.5 = tie
    for i in items:
      votes = [ratings[r][i]["preferred"] for r in raters if "preferred" in ratings[r].get(i, {})]
      per_item.append([0.5 if v == "tie" else float(model_of(i, v) == first) for v in votes])
    per_item = [v for v in per_item if v]
    if not per_item:
      raise UserError("no preferences in the ratings files")
    rate = float(np.mean([v for vs in per_item for v in vs]))
    low, high = bootstrap(per_item, np.mean, n_bootstrap, seed)
    out["win_rate"] = {first: {"rate": rate, "ci95": (low, high)},
                       second: {"rate": 1 - rate, "ci95": (1 - high, 1 - low)}}
    out["judgements"] = sum(map(len, per_item))
    out["ties"] = sum(v == 0.5 for vs in per_item for v in vs)
    code = {first: 0.0, second: 1.0}
    data = [[(2.0 if ratings[r].get(i, {}).get("preferred") == "tie" else
              code[model_of(i, ratings[r][i]["preferred"])])
             if "preferred" in ratings[r].get(i, {}) else np.nan for i in items] for r in raters]
    out["alpha_nominal"] = _alpha(data, "nominal")
  return out


def _alpha(data, level: str) -> float | None:
  """Krippendorff's alpha over raters x units; None where it is undefined (one rater, or no
  unit rated twice, or every rating the same)."""
  data = np.asarray(data, dtype=float)
  if len(data) < 2:
    return None
  values = data[~np.isnan(data)]
  if len(np.unique(values)) < 2 or not ((~np.isnan(data)).sum(0) >= 2).any():
    return None
  return float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))


def markdown(summary: dict) -> list[str]:
  fmt = lambda a: "n/a" if a is None else f"{a:.3f}"
  lines = [f"{summary['items']} items, raters: {', '.join(summary['raters'])}.", ""]
  if summary["kind"] == "likert":
    lines += ["| criterion | " + " | ".join(f"{m} (mean, 95% CI)" for m in summary["models"])
              + " | Krippendorff's alpha (ordinal) |",
              "|---|" + "---|" * len(summary["models"]) + "---|"]
    for criterion in CRITERIA:
      row = summary[criterion]
      cells = [f"{row[m]['mean']:.2f} [{row[m]['ci95'][0]:.2f}, {row[m]['ci95'][1]:.2f}]"
               for m in summary["models"]]
      lines.append(f"| {criterion} | " + " | ".join(cells) + f" | {fmt(row['alpha_ordinal'])} |")
  else:
    lines += ["| model | win rate (ties half), 95% CI |", "|---|---|"]
    for model, r in summary["win_rate"].items():
      lines.append(f"| {model} | {r['rate']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] |")
    lines += ["", f"{summary['judgements']} judgements, {summary['ties']} ties; Krippendorff's "
              f"alpha (nominal) {fmt(summary['alpha_nominal'])}."]
  return lines


def import_ratings(key_path: str, rating_paths: list[str], out: str = "") -> dict:
  key = read_key(key_path)
  ratings = {os.path.splitext(os.path.basename(p))[0]: read_ratings(p, key) for p in rating_paths}
  if len(ratings) != len(rating_paths):
    raise UserError("two ratings files have the same name; the file name is the rater")
  summary = summarize(key, ratings)
  out = out or os.path.join(os.path.dirname(key_path), "summary")
  with open(out + ".json", "w") as f:
    json.dump(summary, f, indent=1)
  with open(out + ".md", "w") as f:
    f.write("\n".join(markdown(summary)) + "\n")
  return summary


def main(argv=None) -> None:
  from absl import flags

  from gptjax.errors import run_app, run_cli

  flags.DEFINE_string("key", None, "the pack's key.json", required=True)
  flags.DEFINE_list("ratings", None, "filled CSVs, one per rater (file name = rater)",
                    required=True)
  flags.DEFINE_string("out", "", "write OUT.json and OUT.md (default: summary beside the key)")
  FLAGS = flags.FLAGS

  def _main(_):
    run_cli(lambda: print("\n".join(markdown(import_ratings(FLAGS.key, FLAGS.ratings,
                                                            FLAGS.out)))))

  run_app(_main, argv)


if __name__ == "__main__":
  main()
