"""User-facing errors: one clear line that says what to change, never a bare stack trace.

`run_cli` is the wrapper every command-line entry point runs its body in."""


class UserError(ValueError):
  """A mistake in config, data or command line that the user can fix.

  CLIs catch it and print `error: <message>` with exit code 2; the message names the setting
  to change (for example `--config.data.path`).
  """


def run_cli(body) -> None:
  """Run a CLI body; a user mistake is printed as one line and exit code 2, no traceback."""
  import sys

  from absl import logging
  logging.set_verbosity(logging.ERROR)  # Orbax logs every save/restore, and read-only opens
  try:
    body()
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
