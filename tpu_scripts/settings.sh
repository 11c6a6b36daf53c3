# shellcheck shell=bash
# Settings every tpu_scripts command reads. Change them here, in a copy passed with
# --settings=FILE, or per command in the environment (ZONE=us-central2-b tpu_scripts/...).
PROJECT="${PROJECT:-my-project}"              # gcloud project
ZONE="${ZONE:-us-east5-a}"                    # where the TPUs are
TPU_NAME="${TPU_NAME:-gptjax-v5p-32}"         # the TPU VM (and its queued resource)
ACCELERATOR="${ACCELERATOR:-v5p-32}"          # accelerator type: v5p-32 = 16 chips, 4 hosts
RUNTIME_VERSION="${RUNTIME_VERSION:-}"        # TPU VM image; empty = the one for ACCELERATOR
CAPACITY="${CAPACITY:-spot}"                  # spot | reserved | on-demand
QUEUED="${QUEUED:-true}"                      # true: ask through a queued resource
BUCKET="${BUCKET:-gs://my-bucket}"            # runs (checkpoints, metrics, logs) live here
NUM_WORKERS="${NUM_WORKERS:-}"                # hosts; empty = counted from the slice itself
INTERNAL_IP="${INTERNAL_IP:-false}"           # true: ssh over internal IPs (from a VM in the VPC)
HOST_KEY_CHECKING="${HOST_KEY_CHECKING:-no}"  # a recreated slice has new host keys: no | yes | ask
# How long to wait and how often to try: every gcloud call runs under `timeout`.
GCLOUD_TIMEOUT="${GCLOUD_TIMEOUT:-300}"       # seconds for one call (describe, ssh, scp, ...)
SETUP_TIMEOUT="${SETUP_TIMEOUT:-1800}"        # seconds for the install on the workers
STOP_TIMEOUT="${STOP_TIMEOUT:-900}"           # seconds for a stop (the checkpoint is saved)
SSH_CONNECT_TIMEOUT="${SSH_CONNECT_TIMEOUT:-20}"  # ssh: give up connecting after this
RETRIES="${RETRIES:-6}"                       # tries of a call that can fail transiently
RETRY_SECONDS="${RETRY_SECONDS:-10}"          # first wait between tries; doubles, up to 300
