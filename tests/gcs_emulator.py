"""gcp-storage-emulator, completed where tensorstore needs more of Cloud Storage than it serves.

    python tests/gcs_emulator.py PORT BUCKET

GCS sends an object's generation in an `x-goog-generation` header with every media download;
tensorstore (Orbax's reads of an OCDBT manifest) takes the generation from there and calls
a download without one "Malformed StorageGeneration". The emulator leaves the header out,
so this adds it (and its metageneration) from the object's own metadata, then serves as the
emulator's command line does.
"""

import sys

from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects


def _download_with_generation(request, response, storage, *args, **kwargs):
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except Exception:  # noqa: BLE001: the emulator's own handler answers a missing object
    obj = None
  if obj is not None:
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj["metageneration"])
  return _download(request, response, storage, *args, **kwargs)


_download = objects.download


def _patch_routes() -> None:
  for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
      if handler is objects.download:
        handlers[method] = _download_with_generation
  objects.download = _download_with_generation  # objects.get delegates alt=media here


def main() -> None:
  port, bucket = int(sys.argv[1]), sys.argv[2]
  _patch_routes()
  emulator = server.create_server("localhost", port, in_memory=True, default_bucket=bucket)
  emulator.run()


if __name__ == "__main__":
  main()
