"""User-facing errors: one clear line that says what to change, never a bare stack trace."""


class UserError(ValueError):
  """A mistake in config, data or command line that the user can fix.

  CLIs catch it and print `error: <message>` with exit code 2; the message names the setting
  to change (for example `--config.data.path`).
  """
