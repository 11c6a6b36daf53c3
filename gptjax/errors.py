"""User-facing errors: one clear line that says what to change, never a bare stack trace.

`run_app` replaces absl's `app.run` in every command-line entry point: a mistyped flag or
`--config` override is one line and exit code 2. `run_cli` is the wrapper each CLI runs its
body in: a `UserError`, or a file the system refuses to read or write, is one line and exit
code 2. `warn` is the one way a run tells the user it changed or skipped something for them.
"""

from __future__ import annotations

import errno
import os
import re
import sys


class UserError(ValueError):
  """A mistake in config, data or command line that the user can fix.

  CLIs catch it and print `error: <message>` with exit code 2; the message names the setting
  to change (for example `--config.data.path`).
  """


class Preempted(Exception):
  """The run saved a checkpoint on a preemption notice and stopped; the same command resumes.
  CLIs exit with PREEMPTED_EXIT_CODE (EX_TEMPFAIL: try again), which launchers watch for."""


PREEMPTED_EXIT_CODE = 75


def warn(message: str) -> None:
  """One line on stderr from the main process: something was adjusted or skipped, and why."""
  import jax
  if jax.process_index() == 0:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _exit(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  raise SystemExit(2)


_OS_HINTS = {
    errno.ENOSPC: "free space on that disk or point --workdir elsewhere",
    errno.EACCES: "fix its permissions or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.EPERM: "fix its permissions or choose another path",
    errno.ENOTDIR: "a path component is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder, not a file: name a file",
    errno.EEXIST: "it already exists as another kind of file: choose another path",
}


def fixable_os_error(e: BaseException) -> str | None:
  """One line for a refused file operation the user can fix (disk full, read-only,
  permissions, a path of the wrong kind) behind `e`, else None. Looks through re-raised
  exceptions, and through tensorstore's errors, which carry the code only in their text
  (`... [os_error_code='28']`)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _OS_HINTS:
      where = f": {e.filename}" if e.filename else ""
      return f"{e.strerror or e}{where}: {_OS_HINTS[e.errno]}"
    for code, hint in _OS_HINTS.items():
      if f"os_error_code='{code}'" in str(e):
        return f"{os.strerror(code)}: {hint}"
    e = e.__cause__ or e.__context__
  return None


def run_cli(body) -> None:
  """Run a CLI body; a user mistake is printed as one line and exit code 2, no traceback."""
  import logging as std_logging

  from absl import logging
  # Orbax logs every save and restore, and a failed background write as a traceback from
  # each of its threads (asyncio adds "exception was never retrieved" for the siblings).
  # The failure still reaches the body as an exception: one line if it is the user's to
  # fix, else a traceback.
  logging.set_verbosity(logging.FATAL)
  std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
  try:
    body()
  except UserError as e:
    _exit(str(e))
  except Preempted as e:
    print(f"preempted: {e}", file=sys.stderr, flush=True)
    raise SystemExit(PREEMPTED_EXIT_CODE) from None
  except Exception as e:  # noqa: BLE001: only a user-fixable OS error becomes one line
    message = fixable_os_error(e)
    if message is None:
      raise
    _exit(message)


# ---------------------------------------------------------------------------------------------
# Flags


def run_app(main, argv=None) -> None:
  """absl's app.run, with every flag or --config mistake one line and exit code 2."""
  from absl import app
  app.run(main, argv=argv, flags_parser=parse_flags)


def define_config_flag(default: str | None, help_text: str, **kwargs):
  """`--config=FILE[:ARG]` plus its `--config.a.b=VALUE` overrides. With a default file,
  ml_collections loads it and reads the overrides from sys.argv right here, so a mistake
  surfaces at definition, before absl parses anything."""
  from ml_collections import config_flags
  try:
    return config_flags.DEFINE_config_file("config", default, help_text, **kwargs)
  except Exception as e:  # noqa: BLE001: any failure here is a config-file or override mistake
    _exit(flag_error_message(e, sys.argv))


def parse_flags(argv: list[str]) -> list[str]:
  from absl import flags
  FLAGS = flags.FLAGS
  try:
    rest = FLAGS(argv)
    if "config" in FLAGS and FLAGS.config is not None:
      FLAGS.config.keys()  # ml_collections reports a bad file or override on first use
  except Exception as e:  # noqa: BLE001: any parse failure is the user's to fix
    _exit(flag_error_message(e, argv))
  return rest


_DID_YOU_MEAN = re.compile(r"""['"](\w+)['"].*Did you mean ["'](\w+)["']""", re.S)


def flag_error_message(e: BaseException, argv: list[str]) -> str:
  """Say which flag is wrong and what to write instead, in one line."""
  text = str(e).replace("\\n", "\n").replace("\\'", "'")
  if isinstance(e, (KeyError, AttributeError)):
    match = _DID_YOU_MEAN.search(text)
    key = match.group(1) if match else text.strip("'\"\n ")
    flag = _override_naming(key, argv)
    hint = ""
    if match:
      suggestion = match.group(2)
      if flag:
        suggestion = ".".join(suggestion if part == key else part for part in flag.split("."))
      hint = f"; did you mean {suggestion}?"
    return f"{flag or key}: no such config setting{hint} (every setting: gptjax/config.py)"
  if isinstance(e, OSError) and "config file" in text:
    config_arg = next((a for a in argv if a.startswith("--config=")), "--config")
    reasons = [line.strip() for line in text.splitlines() if "Errno" in line or "Error" in line]
    reason = reasons[-1] if reasons else "not loadable"
    return f"{config_arg}: cannot load the config file ({reason}): pass configs/NAME.py[:ARG]"
  if "Traceback (most recent call last)" in text:  # get_config raised: keep its last line
    before, _, trace = text.partition("Traceback (most recent call last)")
    text = before.strip().rstrip(":") + ": " + trace.strip().splitlines()[-1]
  line = " ".join(text.split())
  if type(e).__name__ == "UnrecognizedFlagError":
    return f"{line} (see --helpshort for the flags this command takes)"
  if isinstance(e, UserError) or type(e).__name__ == "IllegalFlagValueError":
    return line
  # An exception raised inside a config file's get_config (e.g. an unknown ARG).
  config_arg = next((a for a in argv if a.startswith("--config=")), "--config")
  return f"{config_arg}: {type(e).__name__}: {line}"


def _override_naming(key: str, argv: list[str]) -> str | None:
  """The `--config.a.b` argument that names the unknown `key`, without its value."""
  for arg in argv:
    if arg.startswith("--config."):
      path = arg.split("=", 1)[0]
      if key in path[len("--config."):].split("."):
        return path
  return None
