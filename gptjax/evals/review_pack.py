"""A blinded review pack: model outputs for human raters, with the models hidden.

`write_pack(out_dir, prompts, outputs, kind, seed)` writes
  pack.html  a self-contained form (no server, no network): one card per item, ratings kept in
             the browser's localStorage, and a button that downloads the filled CSV;
  pack.csv   the same items as a sheet to fill in a spreadsheet instead;
  key.json   the only link from items to models: item id -> which model is A and which B,
             and the generation settings. Raters get pack.html or pack.csv, never key.json.
Items are shuffled and each item's A/B order is drawn at random (seeded), so neither the order
of the items nor the side gives a model away.

Kinds: "likert" rates each output 1-5 for fluency, coherence and relevance (one or two
models); "pairwise" asks which of two outputs is better (A, B or tie).
"""

from __future__ import annotations

import csv
import html
import json
import os

import numpy as np

from gptjax.errors import UserError

CRITERIA = ("fluency", "coherence", "relevance")
KINDS = ("likert", "pairwise")
SIDES = ("A", "B")


def rating_columns(kind: str, sides: int) -> list[str]:
  if kind == "pairwise":
    return ["preferred"]
  return [f"{c}_{s}" for s in SIDES[:sides] for c in CRITERIA]


def pack_columns(kind: str, sides: int) -> list[str]:
  return ["item", "prompt", *[f"output_{s}" for s in SIDES[:sides]], *rating_columns(kind, sides)]


def make_items(prompts: list[str], outputs: dict[str, list[str]], kind: str, seed: int):
  """(items for raters, key). `outputs` maps a model's label to its outputs, one per prompt."""
  labels = list(outputs)
  if kind not in KINDS:
    raise UserError(f"review kind {kind!r} is not one of {KINDS}")
  if not 1 <= len(labels) <= 2:
    raise UserError(f"a review pack compares one or two models, got {len(labels)}")
  if kind == "pairwise" and len(labels) != 2:
    raise UserError("a pairwise review needs two models")
  for label in labels:
    if len(outputs[label]) != len(prompts):
      raise UserError(f"{label}: {len(outputs[label])} outputs for {len(prompts)} prompts")
  rng = np.random.default_rng(seed)
  ids = [f"{i:08x}" for i in rng.choice(16**8, size=len(prompts), replace=False)]
  items, key = [], {}
  for n in rng.permutation(len(prompts)):
    order = rng.permutation(len(labels)).tolist()
    item = {"item": ids[n], "prompt": prompts[n]}
    item.update({f"output_{SIDES[i]}": outputs[labels[m]][n] for i, m in enumerate(order)})
    items.append(item)
    key[ids[n]] = {"prompt_index": int(n), **{SIDES[i]: labels[m] for i, m in enumerate(order)}}
  return items, key


def write_pack(out_dir: str, prompts: list[str], outputs: dict[str, list[str]], kind: str,
               seed: int, settings: dict | None = None) -> dict:
  items, key = make_items(prompts, outputs, kind, seed)
  sides = len(outputs)
  os.makedirs(out_dir, exist_ok=True)
  columns = pack_columns(kind, sides)
  write_sheet(os.path.join(out_dir, "pack.csv"), items, columns)
  with open(os.path.join(out_dir, "pack.html"), "w", encoding="utf-8") as f:
    f.write(_html(items, columns, kind, sides, pack_id=f"gptjax-review-{seed}-{len(items)}"))
  with open(os.path.join(out_dir, "key.json"), "w", encoding="utf-8") as f:
    json.dump({"kind": kind, "models": list(outputs), "seed": seed, "settings": settings or {},
               "items": key}, f, indent=1)
  return {"items": len(items), "kind": kind, "models": list(outputs)}


def write_sheet(path: str, rows: list[dict], columns: list[str] | None = None) -> str:
  """Rows as the pack's CSV (a blank sheet, or a rater's filled one); returns `path`."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, columns or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return path


def _html(items, columns, kind, sides, pack_id) -> str:
  # The items go in as JSON in a script element. Escaping only "</" is not enough: "<!--" and
  # "<script" put the tokenizer in its script "escaped" states, where the element runs on past
  # its closing tag and swallows the page's main script. With no "<" at all the data can only
  # end at its own tag; JSON.parse reads \u003c and the like back as the same text. ensure_ascii
  # (the default) already writes U+2028/U+2029 as escapes.
  data = json.dumps({"items": items, "columns": columns, "kind": kind, "sides": sides,
                     "criteria": CRITERIA, "id": pack_id})
  for char in "<>&":
    data = data.replace(char, f"\\u{ord(char):04x}")
  # The title first: filled in last it would also rewrite "__TITLE__" in a text.
  return _PAGE.replace("__TITLE__", html.escape(pack_id)).replace("__DATA__", data, 1)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Review: __TITLE__</title>
<style>
body{font-family:sans-serif;max-width:60rem;margin:auto;padding:1rem;line-height:1.4}
.card{border:1px solid #bbb;border-radius:6px;padding:1rem;margin:1rem 0}
.done{border-color:#2a2}.text{white-space:pre-wrap;background:#f6f6f6;padding:.5rem}
.sides{display:flex;gap:1rem}.side{flex:1}label{margin-right:.6rem}
#bar{position:sticky;top:0;background:#fff;padding:.5rem 0;border-bottom:1px solid #ddd}
</style></head><body>
<div id="bar"><b>Review</b> &middot; rater name <input id="rater" size="14">
&middot; <span id="progress"></span> &middot; <button id="export">Download ratings (CSV)</button>
<p>Rate each output 1 (poor) to 5 (excellent): <i>fluency</i> (well-formed language),
<i>coherence</i> (makes sense as a whole), <i>relevance</i> (answers the prompt); or pick the
better output. Your ratings stay in this browser until you download them.</p></div>
<div id="items"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
const D = JSON.parse(document.getElementById("data").textContent);
const store = "ratings:" + D.id;
const R = JSON.parse(localStorage.getItem(store) || "{}");
const ratingCols = D.columns.filter(c => !c.startsWith("output_") && c !== "item" && c !== "prompt");
function save() { localStorage.setItem(store, JSON.stringify(R)); progress(); }
function complete(id) { return ratingCols.every(c => R[id] && R[id][c]); }
function progress() {
  const n = D.items.filter(it => complete(it.item)).length;
  document.getElementById("progress").textContent = n + " of " + D.items.length + " rated";
  D.items.forEach(it => document.getElementById("card-" + it.item)
    .classList.toggle("done", complete(it.item)));
}
function radios(id, col, values) {
  const span = document.createElement("span");
  values.forEach(v => {
    const l = document.createElement("label"), r = document.createElement("input");
    r.type = "radio"; r.name = id + ":" + col; r.value = v; r.dataset.col = col;
    r.checked = !!(R[id] && R[id][col] === v);
    r.onchange = () => { (R[id] = R[id] || {})[col] = v; save(); };
    l.append(r, " " + v); span.append(l);
  });
  return span;
}
function text(s) { const d = document.createElement("div"); d.className = "text"; d.textContent = s; return d; }
const root = document.getElementById("items");
D.items.forEach((it, n) => {
  const card = document.createElement("div"); card.className = "card"; card.id = "card-" + it.item;
  const h = document.createElement("h3"); h.textContent = "Item " + (n + 1) + " (" + it.item + ")";
  card.append(h, "Prompt:", text(it.prompt));
  const sides = document.createElement("div"); sides.className = "sides";
  ["A", "B"].slice(0, D.sides).forEach(s => {
    const side = document.createElement("div"); side.className = "side";
    side.append((D.sides > 1 ? "Output " + s : "Output") + ":", text(it["output_" + s]));
    if (D.kind === "likert") D.criteria.forEach(c => {
      const row = document.createElement("div"); row.append(c + ": ", radios(it.item, c + "_" + s, ["1", "2", "3", "4", "5"]));
      side.append(row);
    });
    sides.append(side);
  });
  card.append(sides);
  if (D.kind === "pairwise") {
    const row = document.createElement("div"); row.append("Better output: ", radios(it.item, "preferred", ["A", "B", "tie"]));
    card.append(row);
  }
  root.append(card);
});
const rater = document.getElementById("rater");
rater.value = localStorage.getItem(store + ":rater") || "";
rater.oninput = () => localStorage.setItem(store + ":rater", rater.value);
function cell(v) { v = v == null ? "" : String(v); return /[",\\r\\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
function csvText() {
  const lines = [D.columns.join(",")];
  D.items.forEach(it => lines.push(D.columns.map(c => cell(c in it ? it[c] : (R[it.item] || {})[c])).join(",")));
  return lines.join("\\r\\n") + "\\r\\n";
}
document.getElementById("export").onclick = () => {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([csvText()], {type: "text/csv"}));
  a.download = (rater.value.trim().replace(/[^A-Za-z0-9_-]+/g, "_") || "rater") + ".csv";
  document.body.append(a); a.click(); a.remove();
};
progress();
</script></body></html>
"""
