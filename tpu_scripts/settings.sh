# Settings every tpu_scripts command reads. Change them here, in a copy passed with
# --settings=FILE, or per command in the environment (ZONE=us-central2-b tpu_scripts/...).
PROJECT="${PROJECT:-my-project}"              # gcloud project
ZONE="${ZONE:-us-east5-a}"                    # where the TPUs are
TPU_NAME="${TPU_NAME:-gptjax-v5p-32}"         # the TPU VM (and its queued resource)
ACCELERATOR="${ACCELERATOR:-v5p-32}"          # accelerator type: v5p-32 = 16 chips, 4 hosts
RUNTIME_VERSION="${RUNTIME_VERSION:-v2-alpha-tpuv5}"  # TPU VM software image
CAPACITY="${CAPACITY:-spot}"                  # spot | reserved | on-demand
QUEUED="${QUEUED:-true}"                      # true: ask through a queued resource
BUCKET="${BUCKET:-gs://my-bucket}"            # runs (checkpoints, metrics) and data live here
NUM_WORKERS="${NUM_WORKERS:-}"                # hosts; empty = from ACCELERATOR
