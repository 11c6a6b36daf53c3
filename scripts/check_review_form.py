"""The review form in a real headless browser: it loads, records ratings, keeps them across a
reload, and downloads a CSV that gptjax-review reads back.

    apt-get install chromium && pip install playwright   # Debian's Chromium; no browser download
    python scripts/check_review_form.py [--chromium=/usr/bin/chromium] [--screenshot=PNG]

Exits non-zero, naming the step, if any check fails.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import tempfile

from gptjax.evals import review_import, review_pack

# The third prompt holds what once broke the page (its data element swallowed the script).
PROMPTS = ["Translate to German: a dog runs.", "Name a colour.",
           "What is two plus two? <!--<script> </script> & __TITLE__"]
OUTPUTS = {"model_x": ["Ein Hund rennt.", "Blue.", "Four."],
           "model_y": ["Hund Hund.", "I like cake.", "It is 5. <!--"]}


def check(chromium: str, screenshot: str) -> None:
  from playwright.sync_api import sync_playwright
  with tempfile.TemporaryDirectory() as tmp:
    for kind in ("likert", "pairwise"):
      pack = os.path.join(tmp, kind)
      review_pack.write_pack(pack, PROMPTS, OUTPUTS, kind, seed=0)
      key = json.load(open(os.path.join(pack, "key.json")))
      first_item = next(csv.DictReader(open(os.path.join(pack, "pack.csv"))))["item"]
      with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(accept_downloads=True, viewport={"width": 1100, "height": 900})
        page.goto("file://" + os.path.join(pack, "pack.html"))
        assert page.locator(".card").count() == len(PROMPTS), "one card per item"
        page.fill("#rater", "Dana")
        columns = review_pack.rating_columns(kind, 2)
        picks = {c: ("A" if kind == "pairwise" else str(2 + n % 3)) for n, c in enumerate(columns)}
        for column, value in picks.items():
          page.check(f'input[name="{first_item}:{column}"][value="{value}"]')
        assert page.inner_text("#progress") == f"1 of {len(PROMPTS)} rated", "progress counts"
        page.reload()  # ratings live in localStorage: a reload loses nothing
        for column, value in picks.items():
          assert page.is_checked(f'input[name="{first_item}:{column}"][value="{value}"]'), \
              f"{column} kept across a reload"
        assert page.input_value("#rater") == "Dana"
        if screenshot and kind == "likert":
          page.screenshot(path=screenshot, full_page=False)
        with page.expect_download() as download:
          page.click("#export")
        assert download.value.suggested_filename == "Dana.csv", "file named after the rater"
        path = os.path.join(tmp, f"{kind}-Dana.csv")
        download.value.save_as(path)
        browser.close()
      rows = list(csv.DictReader(io.open(path, newline="", encoding="utf-8")))
      assert [r["item"] for r in rows] == [r["item"] for r in csv.DictReader(
          open(os.path.join(pack, "pack.csv")))], "the download lists the pack's items in order"
      ratings = review_import.read_ratings(path, key)
      assert ratings[first_item] == picks, f"downloaded ratings {ratings[first_item]} != {picks}"
      assert all(not v for item, v in ratings.items() if item != first_item), "others blank"
      print(f"{kind}: loads, records, survives a reload, downloads {os.path.basename(path)} "
            "and gptjax-review reads it back")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--chromium", default="/usr/bin/chromium")
  parser.add_argument("--screenshot", default="")
  args = parser.parse_args()
  check(args.chromium, args.screenshot)


if __name__ == "__main__":
  main()
