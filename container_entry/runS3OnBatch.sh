#!/usr/bin/env bash
# GenePattern's AWS Batch job definitions call this with
#   TASKLIB INPUT_FILES_DIR S3_ROOT WORKING_DIR EXECUTABLE   (and GP_METADATA_DIR in the environment).
# gpstage-entry keeps that contract (S3_ROOT may be any storage URL) and, unlike the original script,
# exits with the module's code and fails when a transfer fails.
here=$(dirname "$0")
if [ -x "$here/gpstage-entry" ]; then
  exec "$here/gpstage-entry" "$@"  # installed side by side (a venv's bin, /usr/local/bin in the image)
fi
exec gpstage-entry "$@"
